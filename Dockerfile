# The Skewless image: the CLI, the training code and the predictor. Settings come from the
# environment (SKEWLESS_*), as everywhere else.
FROM python:3.11-slim
WORKDIR /app
ENV FEAST_USAGE=False PYTHONUNBUFFERED=1
COPY pyproject.toml README.md alembic.ini ./
COPY skewless skewless
COPY training training
COPY service service
COPY feature_repo feature_repo
# Editable, so the default paths (feature_repo/, var/) resolve under /app.
RUN pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["skewless", "serve", "--host", "0.0.0.0", "--port", "8000"]
