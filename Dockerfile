# One image for every role of docker-compose.yml: the trainer, the recommender service, the
# attacker and (built with EXTRAS=notebook) JupyterLab. The roles differ only by command.
#
#   docker build -t copyattack-sim:local .
#   podman build --format docker -t copyattack-sim:local .   # OCI format drops HEALTHCHECK
#   docker build -t copyattack-sim:local-notebook --build-arg EXTRAS=notebook .
#
# Nothing secret and no dataset goes into the image: the admin token comes from the
# environment at run time, and the data's licences forbid redistribution, so the trainer
# fetches them into a mounted folder instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COPYATTACK_DATA_DIR=/data

# torch first, alone and pinned, from the CPU index: resolved through PyPI (or through
# another package's range) pip would pick a CUDA build of several GB that this CPU-only
# simulator never uses. The project's own pin (torch==2.13.0 on Linux x86_64 / 3.11, a
# range elsewhere) is then already satisfied by 2.13.0+cpu, so nothing replaces it.
# This is the largest layer and changes least, so it comes first. --no-deps, then torch's
# own dependencies (filelock, sympy, ...) from the default index in a second step: the CPU
# index need not mirror them (on a machine whose pip reaches only a local mirror it does
# not), and with torch already installed the second step cannot swap it for a CUDA build.
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
RUN pip install "torch==2.13.0"

# The other dependencies, read from pyproject.toml alone: this layer is rebuilt when the
# dependencies change, not on every edit of the code or the README.
# EXTRAS: comma-separated optional dependency groups of pyproject.toml, e.g. "notebook".
ARG EXTRAS=""
WORKDIR /tmp/build
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; \
project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [name for name in sys.argv[1].split(',') if name]; \
print('\n'.join(project['dependencies'] \
    + [d for name in extras for d in project['optional-dependencies'][name]]))" \
        "$EXTRAS" > requirements.txt \
    && pip install -r requirements.txt

# The project itself (pyproject names README.md as its readme, so the build needs it).
# --no-deps: everything was installed above; pip check fails the build if that ever
# stops being true instead of letting pip resolve (and maybe pull CUDA torch) here.
COPY README.md ./
COPY shared ./shared
COPY recsys_server ./recsys_server
COPY attacker_client ./attacker_client
RUN pip install --no-deps . && pip check && rm -rf /tmp/build

# A non-root user whose uid/gid can match the host's (docker-compose.yml passes
# COPYATTACK_UID / COPYATTACK_GID), so files it writes into bind mounts (results, data,
# notebooks) belong to whoever ran compose. --non-unique: a host gid such as 20 (macOS
# "staff") may already exist in Debian. The mount points are created and owned here so
# that a fresh named volume mounted on them inherits this ownership.
ARG APP_UID=1000
ARG APP_GID=1000
RUN groupadd --non-unique --gid "${APP_GID}" app \
    && useradd --non-unique --uid "${APP_UID}" --gid "${APP_GID}" --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /models /ledger /data /results /work/notebooks \
    && chown app:app /models /ledger /data /results /work /work/notebooks
USER app
WORKDIR /home/app

EXPOSE 8000

# Readiness of the service (model and worlds loaded; 503 before). Written in Python
# because the slim image has no curl, and urlopen raises, so exits non-zero, on any
# error or non-2xx answer. Containers of other roles disable it in docker-compose.yml.
# start-period: failures while the model loads and the ledger replays do not count.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

CMD ["recsys-server", "serve", "--artifact", "/models/model.pt", "--host", "0.0.0.0", \
     "--port", "8000", "--ledger", "/ledger/ledger.sqlite3"]
