# edgebuild in a container: the pinned Python stack, the arm and RISC-V toolchains, qemu-user, g++ and cmake.
#
#   docker build -t edgebuild .
#   docker run --rm -v "$PWD:/work" edgebuild --target rpi4
#
# BASE_IMAGE is pinned by digest. The digest below is debian:bookworm-slim's multi-arch
# index as Docker resolved it in a public build log; it could not be checked against the
# registry from the machine this file was written on. Check it, or re-pin, with
#   docker buildx imagetools inspect debian:bookworm-slim      (or: skopeo inspect docker://debian:bookworm-slim)
# Any Debian 12 (bookworm) image works: its python3 (3.11) is the one docker/requirements.lock
# was resolved for. The tests build a local one with debootstrap (tests/test_docker.py).
ARG BASE_IMAGE=debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
# python3-venv: the interpreter edgebuild runs on. g++, cmake, make: edgebuild's link stage
# compiles the generated C/C++ with the host compilers. gcc-arm-none-eabi, libnewlib-arm-none-eabi:
# the Cortex-M compile and link check; gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf: the same
# for RISC-V microcontrollers (esp32-c3). qemu-user-static: runs arm64 programs (emulated runners).
# libstdc++-arm-none-eabi-newlib, qemu-system-arm: TFLM firmware built and run on an emulated
# Cortex-M board (--device qemu on microcontroller targets; TFLM's sources from docker/third_party/, below).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates python3 python3-venv \
      g++ cmake make \
      gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib \
      gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf \
      qemu-user-static qemu-system-arm \
 && rm -rf /var/lib/apt/lists/*

# Every Python dependency, exactly as locked (versions and sha256 of every file), from
# binary wheels only: nothing is compiled, nothing unlocked is fetched.
ENV VIRTUAL_ENV=/opt/edgebuild \
    PATH=/opt/edgebuild/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
# Behind a TLS-intercepting proxy, hand pip the proxy's CA bundle as a build secret (not kept
# in the image): docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt .
COPY docker/requirements.lock /opt/edgebuild-requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python3 -m venv /opt/edgebuild \
 && pip install --require-hashes --only-binary=:all: -r /opt/edgebuild-requirements.lock

# edgebuild itself, without dependencies. --no-build-isolation builds it with the locked
# setuptools instead of fetching an unpinned one.
COPY pyproject.toml README.md /tmp/edgebuild-src/
COPY edgebuild /tmp/edgebuild-src/edgebuild
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/edgebuild-src \
 && rm -rf /tmp/edgebuild-src \
 && pip check \
 && edgebuild --version

# TFLM's pinned sources (--device qemu on Cortex-M targets builds firmware with them), when
# docker/third_party/ holds them (edgebuild sources --into docker/third_party): checked here
# against the tree hashes edgebuild ships, and used by every build in the container, which then
# needs no network. Without them, firmware builds download the sources.
COPY docker/third_party/ /opt/edgebuild/third_party/
RUN if ls /opt/edgebuild/third_party/*.tar.gz >/dev/null 2>&1; then \
      EDGEBUILD_THIRD_PARTY=/opt/edgebuild/third_party EDGEBUILD_FIRMWARE_DIR=/tmp/edgebuild-sources \
        edgebuild sources && rm -rf /tmp/edgebuild-sources; \
    fi

COPY docker/entrypoint.sh /usr/local/bin/edgebuild-entrypoint
RUN chmod 0755 /usr/local/bin/edgebuild-entrypoint \
 && useradd --uid 1000 --user-group --create-home --shell /bin/bash edgebuild \
 && install -d -o edgebuild -g edgebuild /work

USER edgebuild
WORKDIR /work
VOLUME /work
ENTRYPOINT ["/usr/local/bin/edgebuild-entrypoint"]
CMD ["--help"]
