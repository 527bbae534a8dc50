"""The local web app (`pasture app`): teach, test and runs pages over pasture.api. Needs the extra
`pip install -e ".[app]"` (FastAPI, uvicorn, python-multipart)."""
