"""Canonical URLs and codes of Da Vinci PAS (2.0.1 and 2.2.1)."""

from enum import StrEnum

PAS = "http://hl7.org/fhir/us/davinci-pas"
SD = f"{PAS}/StructureDefinition/"
PAS_TEMP = f"{PAS}/CodeSystem/PASTempCodes"
X12 = "https://codesystem.x12.org/005010/"
REVIEW_ACTION_CS = X12 + "306"
REJECT_REASON_CS = X12 + "901"
FOLLOWUP_CS = X12 + "889"
CERT_TYPE_CS = X12 + "1322"
LEVEL_OF_SERVICE_CS = X12 + "1338"

EXT_REVIEW_ACTION = SD + "extension-reviewAction"
EXT_REVIEW_ACTION_CODE = SD + "extension-reviewActionCode"
EXT_CERT_TYPE = SD + "extension-certificationType"
EXT_INFO_CHANGED = SD + "extension-infoChanged"
EXT_INFO_CANCELLED = SD + "extension-infoCancelled"
EXT_ITEM_TRACE = SD + "extension-itemTraceNumber"
EXT_REQUESTED_SERVICE = SD + "extension-requestedService"
EXT_REQUESTED_SERVICE_DATE = SD + "extension-itemRequestedServiceDate"
EXT_PREAUTH_ISSUE = SD + "extension-itemPreAuthIssueDate"
EXT_PREAUTH_PERIOD = SD + "extension-itemPreAuthPeriod"
EXT_AUTHORIZED_PROVIDER = SD + "extension-itemAuthorizedProvider"
EXT_AUTHORIZED_DETAIL = SD + "extension-itemAuthorizedDetail"
EXT_ADMIN_REF = SD + "extension-administrationReferenceNumber"
EXT_AUTH_NUMBER = SD + "extension-authorizationNumber"
EXT_ERROR_ELEMENT = SD + "extension-errorElement"
EXT_ERROR_PATH = SD + "extension-errorPath"
EXT_ERROR_FOLLOWUP = SD + "extension-errorFollowupAction"
EXT_REVIEWER = SD + "extension-claimResponseReviewer"
EXT_TRANSMISSION = SD + "extension-TransmissionIdentifiers"
EXT_LEVEL_OF_SERVICE = SD + "extension-levelOfServiceCode"
EXT_COMMUNICATED_DIAGNOSIS = SD + "extension-communicatedDiagnosis"
EXT_ADMISSION_DATES = SD + "extension-admissionDates"
EXT_DISCHARGE_DATE = SD + "extension-dischargeDate"
EXT_SERVICE_LINE = SD + "extension-serviceLineNumber"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
EXT_CLAIM_ENCOUNTER = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Claim.encounter"

PROFILE_RESPONSE_BUNDLE = SD + "profile-pas-response-bundle"
PROFILE_CLAIMRESPONSE = SD + "profile-claimresponse"
PROFILE_INQUIRY_RESPONSE_BUNDLE = SD + "profile-pas-inquiry-response-bundle"
PROFILE_CLAIMINQUIRYRESPONSE = SD + "profile-claiminquiryresponse"
PROFILE_TASK = SD + "profile-task"
PROFILE_COMMUNICATION_REQUEST = SD + "profile-communicationrequest"

TOPIC = f"{PAS}/SubscriptionTopic/PASSubscriptionTopic"
SUBMIT_OPERATION = f"{PAS}/OperationDefinition/Claim-submit"
INQUIRE_OPERATION = f"{PAS}/OperationDefinition/Claim-inquiry"

class ReviewAction(StrEnum):
    """The X12 306 review action of an item (what ``ItemDecision.action`` holds), named once here so
    that no two modules spell them differently. ``CANCELLED`` is Precert's own mark for a line the
    provider cancelled; the response carries no review action for it."""

    APPROVED = "A1"  # certified in total
    DENIED = "A3"  # not certified
    PENDED = "A4"
    MODIFIED = "A6"
    CANCELLED = "C"


# Review actions that certify an item (and so give the request an authorization number).
CERTIFYING = frozenset({ReviewAction.APPROVED, ReviewAction.MODIFIED})

REVIEW_ACTIONS = {
    ReviewAction.APPROVED: "Certified in total",
    ReviewAction.DENIED: "Not Certified",
    ReviewAction.PENDED: "Pending",
    ReviewAction.MODIFIED: "Modified",
}

# The two versions Precert answers in.
V201 = "2.0.1"
V221 = "2.2.1"

SUBMIT_DEFINITION = {
    "resourceType": "OperationDefinition",
    "url": SUBMIT_OPERATION,
    "name": "ClaimSubmit",
    "status": "active",
    "kind": "operation",
    "code": "submit",
    "resource": ["Claim"],
    "system": False,
    "type": True,
    "instance": False,
    "parameter": [
        {"name": "resource", "use": "in", "min": 1, "max": "1", "type": "Bundle"},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"},
    ],
}

INQUIRE_DEFINITION = {
    "resourceType": "OperationDefinition",
    "url": INQUIRE_OPERATION,
    "name": "ClaimInquiry",
    "status": "active",
    "kind": "operation",
    "code": "inquire",
    "resource": ["Claim"],
    "system": False,
    "type": True,
    "instance": False,
    "parameter": [
        {"name": "resource", "use": "in", "min": 1, "max": "1", "type": "Bundle"},
        {"name": "return", "use": "out", "min": 0, "max": "*", "type": "Bundle"},
    ],
}
