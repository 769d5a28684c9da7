FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestration orchestration
COPY agents agents
COPY workers workers
COPY examples examples
RUN pip install --no-cache-dir -e .
RUN useradd --create-home baton && chown -R baton /app
USER baton
ENV BATON_HOME=/app/.baton
CMD ["baton", "worker"]
