"""Notes over REST (/api/notes), a live feed over a WebSocket (/ws), and /healthz.

Run: ``fastapi run app/main.py`` (the port from $PORT, or --port), or ``fastapi dev app/main.py``."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated

from anyio import from_thread
from fastapi import Depends, FastAPI, HTTPException, Query, Response, WebSocket, WebSocketDisconnect, status
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .config import settings
from .db import engine, get_session
from .live import hub
from .models import Note
from .schemas import NoteCreate, NoteRead


@asynccontextmanager
async def lifespan(app: FastAPI):
    # the schema is Alembic's (`alembic upgrade head`, the release command), never made here:
    # two releases side by side must not race to change it
    yield
    engine.dispose()


app = FastAPI(title="Notes", version="0.1.0", lifespan=lifespan)
SessionDep = Annotated[Session, Depends(get_session)]


@app.get("/healthz")
def healthz(session: SessionDep) -> dict:
    session.execute(text("SELECT 1"))
    return {"status": "ok", "database": engine.dialect.name, "clients": len(hub.clients)}


@app.post("/api/notes", status_code=status.HTTP_201_CREATED)
def create_note(note: NoteCreate, session: SessionDep) -> NoteRead:
    row = Note(**note.model_dump())
    session.add(row)
    session.commit()
    created = NoteRead.model_validate(row)
    # sync endpoints run in a worker thread: hand the broadcast to the event loop
    from_thread.run(hub.broadcast, {"type": "note", "note": created.model_dump(mode="json")})
    return created


@app.get("/api/notes")
def list_notes(session: SessionDep, limit: Annotated[int, Query(ge=1, le=settings.max_page)] = 20,
               offset: Annotated[int, Query(ge=0)] = 0) -> list[NoteRead]:
    rows = session.scalars(select(Note).order_by(Note.id.desc()).limit(limit).offset(offset))
    return [NoteRead.model_validate(r) for r in rows]


@app.get("/api/notes/{note_id}")
def get_note(note_id: int, session: SessionDep) -> NoteRead:
    row = session.get(Note, note_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"note {note_id} not found")
    return NoteRead.model_validate(row)


@app.delete("/api/notes/{note_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_note(note_id: int, session: SessionDep) -> Response:
    row = session.get(Note, note_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"note {note_id} not found")
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.websocket("/ws")
async def live(ws: WebSocket) -> None:
    """Each text message is echoed to its sender with the running count of messages; every
    client hears the new count, and each note as it is created."""
    await hub.join(ws)
    try:
        await ws.send_json({"type": "hello", "clients": len(hub.clients), "count": hub.messages})
        while True:
            data = await ws.receive_text()
            n = await hub.count()
            await ws.send_json({"type": "echo", "data": data, "count": n})
            await hub.broadcast({"type": "count", "count": n, "clients": len(hub.clients)})
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(ws)
