FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY cds_hooks ./cds_hooks
COPY questionnaires ./questionnaires
COPY capability ./capability
# Read at run time from the source tree: the IG packages the validator compiles and the examples.
COPY fhir-packages ./fhir-packages
COPY examples ./examples
RUN pip install --no-cache-dir -e .
EXPOSE 8080
CMD ["precert", "serve", "--host", "0.0.0.0", "--port", "8080"]
