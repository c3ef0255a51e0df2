"""``uv run pytest``: the API and the live feed against a throwaway SQLite database, migrated
by Alembic."""

import os
import tempfile

os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="notes-test-")
os.environ.pop("DATABASE_URL", None)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from app.config import database_url  # noqa: E402
from app.main import app  # noqa: E402

# the schema as a release makes it: the migrations, not create_all
command.upgrade(Config(os.path.join(os.path.dirname(__file__), "..", "alembic.ini")), "head")


def test_a_note_is_created_listed_fetched_and_deleted():
    with TestClient(app) as client:
        r = client.post("/api/notes", json={"title": "groceries", "body": "eggs"})
        assert r.status_code == 201
        note = r.json()
        assert client.get("/api/notes").json()[0] == note
        assert client.get(f"/api/notes/{note['id']}").json() == note
        assert client.delete(f"/api/notes/{note['id']}").status_code == 204
        assert client.get(f"/api/notes/{note['id']}").status_code == 404


def test_an_empty_title_is_refused():
    with TestClient(app) as client:
        assert client.post("/api/notes", json={"title": ""}).status_code == 422


def test_the_live_feed_echoes_counts_and_announces_notes():
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello"
        ws.send_text("ping")
        echo = ws.receive_json()
        assert echo == {"type": "echo", "data": "ping", "count": hello["count"] + 1}
        assert ws.receive_json() == {"type": "count", "count": echo["count"], "clients": 1}
        client.post("/api/notes", json={"title": "live"})
        assert ws.receive_json()["note"]["title"] == "live"


def test_database_urls():
    assert database_url("postgres://u:p@db:5432/notes", None) == "postgresql+psycopg://u:p@db:5432/notes"
    assert database_url("postgresql://u@db/notes", None) == "postgresql+psycopg://u@db/notes"
    assert database_url("postgresql+psycopg://u@db/notes", None) == "postgresql+psycopg://u@db/notes"
