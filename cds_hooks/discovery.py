"""The six CRD services and the discovery document (``GET /cds-services``).

Each hook has exactly one service (Inferno and most EHRs take the first service for a hook). The
configuration options are one boolean per card type Precert returns for that hook (named by the CRD
``cardType`` codes, deviations dev-7) plus ``max-cards``; secondary hooks offer no documentation.
"""

from __future__ import annotations

from cds_hooks.templates import PREFETCH

PRIMARY = ("order-sign", "order-dispatch", "appointment-book")
SECONDARY = ("order-select", "encounter-start", "encounter-discharge")
HOOKS = ("order-sign", "order-select", "order-dispatch", "appointment-book", "encounter-start", "encounter-discharge")
CRD_VERSIONS = ["2.2"]

OPTIONS = {
    "coverage-info": ("Coverage Information", "Coverage, prior authorization and documentation requirements for the "
                      "orders, returned as coverage-information on the orders (and forms to complete where DTR is unavailable)."),
    "guideline": ("Payer Guidelines", "Payer instructions and links to the payer's coverage policy for the ordered service."),
    "limits": ("Coverage Limits", "The quantity the payer authorizes per request, when the order is limited."),
    "network": ("Network Information", "Notice when the ordering or performing provider is out of the plan's network."),
    "therapy-alternatives-opt": ("Optional Therapy Alternatives", "Covered alternatives that avoid prior authorization or cost less."),
    "therapy-alternatives-req": ("Required Therapy Alternatives", "Covered alternatives when the ordered service is not covered."),
    "insurance": ("Insurance Updates", "Corrections to the coverage record the EHR holds (status, period, plan) from the payer's record."),
}
MAX_CARDS = ("Maximum cards", "The most cards returned; the most important are kept.", 10)

HOOK_OPTIONS = {
    "order-sign": ["coverage-info", "guideline", "limits", "network", "therapy-alternatives-opt", "therapy-alternatives-req", "insurance"],
    "order-select": ["coverage-info", "guideline", "limits", "network", "therapy-alternatives-opt", "therapy-alternatives-req", "insurance"],
    "order-dispatch": ["coverage-info", "guideline", "limits", "network", "insurance"],
    "appointment-book": ["coverage-info", "guideline", "limits", "network", "insurance"],
    "encounter-start": ["coverage-info", "guideline", "insurance"],
    "encounter-discharge": ["coverage-info", "guideline"],
}

TITLES = {
    "order-sign": ("Precert order signing coverage requirements",
                   "Coverage, prior authorization and documentation requirements for orders being signed"),
    "order-select": ("Precert order selection coverage guidance",
                     "Coverage guidance and covered alternatives for orders as they are selected"),
    "order-dispatch": ("Precert order dispatch coverage requirements",
                       "Coverage and prior authorization requirements for an order routed to a specific performer"),
    "appointment-book": ("Precert appointment booking coverage requirements",
                         "Coverage and prior authorization requirements for the service an appointment is booked for"),
    "encounter-start": ("Precert encounter start coverage guidance", "Coverage guidance at the start of an encounter"),
    "encounter-discharge": ("Precert encounter discharge coverage guidance", "Coverage guidance when an encounter ends"),
}


def service_id(hook: str) -> str:
    return f"{hook}-crd"


SERVICE_HOOK = {service_id(h): h for h in HOOKS}


def option_defaults(hook: str) -> dict:
    out: dict = {code: True for code in HOOK_OPTIONS[hook]}
    out["max-cards"] = MAX_CARDS[2]
    return out


def services() -> list[dict]:
    out = []
    for hook in HOOKS:
        title, description = TITLES[hook]
        options = [{"code": code, "type": "boolean", "name": OPTIONS[code][0], "description": OPTIONS[code][1], "default": True}
                   for code in HOOK_OPTIONS[hook]]
        options.append({"code": "max-cards", "type": "integer", "name": MAX_CARDS[0], "description": MAX_CARDS[1], "default": MAX_CARDS[2]})
        out.append({
            "hook": hook,
            "title": title,
            "description": description,
            "id": service_id(hook),
            "prefetch": dict(PREFETCH[hook]),
            "usageRequirements": "Send the patient's primary Coverage in prefetch (or allow FHIR access through "
                                 "fhirAuthorization); sign requests with a JWT from a registered EHR key.",
            "extension": {"davinci-crd.version": list(CRD_VERSIONS), "davinci-crd.configuration-options": options},
        })
    return out


def discovery_document() -> dict:
    return {"services": services()}
