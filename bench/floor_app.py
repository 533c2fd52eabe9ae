"""The floor: the least a FastAPI app served by uvicorn can do for the same request. It parses the
same JSON body and answers a small fixed JSON. Precert's figures are reported as ratios to it."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()
FIXED = orjson.dumps({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]})


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
async def anything(request: Request, path: str) -> Response:
    body = await request.body()
    if body:
        orjson.loads(body)
    return Response(FIXED, media_type="application/fhir+json")
