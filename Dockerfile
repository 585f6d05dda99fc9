# One mailnode node. Data (config, keys, database) lives in the /data volume.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crypto ./crypto
COPY dht ./dht
COPY mailnode ./mailnode
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home mailnode && mkdir /data \
    && chown mailnode /data
USER mailnode
ENV MAILNODE_HOME=/data
VOLUME ["/data"]
EXPOSE 2587/tcp 2143/tcp 2700/tcp 2700/udp
ENTRYPOINT ["mailnode"]
CMD ["run"]
