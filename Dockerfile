# tunewatch in a small image: an unprivileged user, the database on a volume, /healthz checked.
#   docker build -t tunewatch .
#   docker run -d --name tunewatch --env-file tunewatch.env -v tunewatch-data:/data tunewatch
# (deploy/compose.yaml does the same with compose; the README has the steps.)

FROM python:3.11-slim AS build
# Every dependency ships wheels for Linux: no compiler, nothing left behind but the venv.
RUN python -m venv /opt/tunewatch
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY cogs ./cogs
RUN /opt/tunewatch/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim
# A fixed uid and gid, so a directory bind-mounted at /data can be given to them on the host.
RUN groupadd --system --gid 10001 tunewatch \
    && useradd --system --uid 10001 --gid tunewatch --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin tunewatch \
    && mkdir /data \
    && chown tunewatch:tunewatch /data
COPY --from=build /opt/tunewatch /opt/tunewatch
# HTTP_PORT: the HEALTHCHECK asks the bot's /healthz, so the image turns the HTTP server on; it
# listens on every address of the container (publish the port only if something outside needs
# it: the API's webhook calls, Prometheus). Do not set these three to empty values in an env file.
ENV PATH=/opt/tunewatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_PATH=/data/tunewatch.db \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["tunewatch", "health"]
# The bot is PID 1 and handles SIGTERM itself: `docker stop` closes it cleanly within 5 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tunewatch"]
CMD ["run"]
