"""``python -m app`` / ``notes-api``: uvicorn on $HOST:$PORT, the way `fastapi run` serves it."""

import os

import uvicorn


def main() -> None:
    uvicorn.run("app.main:app", host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")),
                proxy_headers=True, forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"))


if __name__ == "__main__":
    main()
