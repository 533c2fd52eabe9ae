"""The durable-write floor: the least a FastAPI app served by uvicorn can do for a write. It parses
the same JSON body, inserts one document holding it into the same database Precert uses, with
Precert's write concern (w majority, journal), and answers a small fixed JSON. ``$submit`` is
reported against it beside the plain floor.

The database comes from ``BENCH_FLOOR_MONGODB_URI``.
"""

from __future__ import annotations

import os
import uuid

import orjson
from bson import Binary
from fastapi import FastAPI, Request
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern
from starlette.responses import Response

from server.storage import WRITE_CONCERN

FIXED = orjson.dumps({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]})
client = AsyncMongoClient(os.environ["BENCH_FLOOR_MONGODB_URI"], tz_aware=True)
collection = client["bench_floor"].get_collection(
    "writes", write_concern=WriteConcern(w=WRITE_CONCERN["w"], j=WRITE_CONCERN["journal"]))

app = FastAPI()


@app.get("/ready")
async def ready() -> Response:
    return Response(FIXED, media_type="application/fhir+json")


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
async def anything(request: Request, path: str) -> Response:
    body = await request.body()
    doc = {"_id": uuid.uuid4().hex}
    if body:
        parsed = orjson.loads(body)
        doc["t"] = parsed.get("resourceType") if isinstance(parsed, dict) else None
        doc["json"] = Binary(body)
    await collection.insert_one(doc)
    return Response(FIXED, status_code=201, media_type="application/fhir+json")
