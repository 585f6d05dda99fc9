# One mailnode node. Data (config, keys, database) lives in the /data volume.
# Arguments go to `mailnode` (docker/entrypoint.sh): `docker run IMAGE user add alice`;
# without any, the node is created on first start ($MAILNODE_INIT_ARGS) and run.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crypto ./crypto
COPY dht ./dht
COPY mailnode ./mailnode
COPY migrations ./migrations
COPY docker/entrypoint.sh /usr/local/bin/mailnode-entrypoint
RUN pip install --no-cache-dir . && useradd --create-home mailnode && mkdir /data \
    && chown mailnode /data
USER mailnode
ENV MAILNODE_HOME=/data
VOLUME ["/data"]
EXPOSE 2587/tcp 2143/tcp 2700/tcp 2700/udp
ENTRYPOINT ["sh", "/usr/local/bin/mailnode-entrypoint"]
CMD ["run"]
