"""Liveness and readiness: /healthz answers 200 only when the database answers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        return JSONResponse({"status": "unavailable", "database": str(error)[:200]},
                            status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})
