import sys

try:
    from edgebuild.cli import run
except KeyboardInterrupt:  # Ctrl-C while starting up
    print("edgebuild: interrupted; the previous artifacts were left as they were", file=sys.stderr)
    sys.exit(130)

run()
