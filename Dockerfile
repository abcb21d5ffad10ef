# The target project under either worker mode, for docker-compose users.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY target ./target
RUN pip install --no-cache-dir .
ENV DJANGO_SETTINGS_MODULE=asyncprof_target.settings \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# Seed the table (idempotent), then serve. MODE_ARGS picks the worker class and app.
CMD ["sh", "-c", "asyncprof seed --db \"$DATABASE_URL\" && exec gunicorn -c python:asyncprof.worker.gunicorn_conf --bind 0.0.0.0:8000 --workers 4 $MODE_ARGS"]
