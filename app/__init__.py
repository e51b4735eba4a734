"""PipeScope's web dashboard: FastAPI server, websocket stream and pages."""
