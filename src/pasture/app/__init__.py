"""The local web app (`pasture app`): teach, test, improve and runs pages over pasture.api. Needs the
extra `pip install -e ".[app]"` (FastAPI, uvicorn, python-multipart, markdown-it-py).

server   the FastAPI app: the pages' endpoints and the static page
runs     the Runs page's endpoints: the list, a run's numbers for its charts, its model card as HTML
state    what the routes share: the app's state, a gate per kind of request, checked names and photos
improve  the Improve page's endpoints: which new-camera photos to label, and the adapted run
guard    who may use it: Host check, launch token, Origin checks, security headers
jobs     the trainings and adaptations: one at a time, cancellable, resumable
uploads  photos streamed to disk with a cap per file and per request
live     the Test page's camera: frames labelled by a run kept loaded
downloads  a file per export format, exported on first request and served from the run folder
"""
