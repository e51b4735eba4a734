"""The application factory."""

from fastapi import FastAPI


def create_app() -> FastAPI:
    """Build the PipeScope application."""
    app = FastAPI(title="PipeScope")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
