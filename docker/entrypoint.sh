#!/bin/sh
# The image's entrypoint: `docker run ... edgebuild ARGS` runs `edgebuild ARGS` in /work.
#
# The image's user is `edgebuild` (uid 1000). To have the files written to a mounted /work
# owned by you, run as your own uid: docker run --user "$(id -u):$(id -g)" ... Such a uid
# has no home in the image, so HOME (Keras, matplotlib and edgebuild's stage cache write
# under it) then becomes a fresh folder under /tmp.
set -eu

if [ ! -d "${HOME:-}" ] || [ ! -w "${HOME:-}" ]; then
    HOME="$(mktemp -d /tmp/edgebuild-home.XXXXXX)"
    export HOME
fi

if [ ! -w . ]; then
    echo "edgebuild-entrypoint: warning: $(pwd) is not writable by uid $(id -u); a build cannot write" \
        "its output there (run with --user \"\$(id -u):\$(id -g)\")" >&2
fi

# TFLM's pinned sources, when the image was built with them (docker/third_party/).
if [ -z "${EDGEBUILD_THIRD_PARTY:-}" ] && ls /opt/edgebuild/third_party/*.tar.gz >/dev/null 2>&1; then
    EDGEBUILD_THIRD_PARTY=/opt/edgebuild/third_party
    export EDGEBUILD_THIRD_PARTY
fi

exec edgebuild "$@"
