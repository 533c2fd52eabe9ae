FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY cds_hooks ./cds_hooks
COPY questionnaires ./questionnaires
COPY capability ./capability
RUN pip install --no-cache-dir .
EXPOSE 8080
CMD ["precert", "serve", "--host", "0.0.0.0", "--port", "8080"]
