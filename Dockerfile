FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestration orchestration
COPY agents agents
COPY workers workers
COPY examples examples
RUN pip install --no-cache-dir -e .
# The directories the named volumes mount on exist, owned by the user that writes them
# (a new volume takes the ownership of the directory it is mounted on).
RUN useradd --create-home baton && mkdir -p /app/.baton/reports && chown -R baton /app
USER baton
ENV BATON_HOME=/app/.baton
CMD ["baton", "worker"]
