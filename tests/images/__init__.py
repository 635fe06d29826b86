"""The images built and checked for real: buildah with vfs storage and chroot isolation, on a local
Debian base made by debootstrap (no registry is reachable here). `python -m tests.images` builds
them (`make images`); tests/images/test_*.py check them (`make images-test`)."""
