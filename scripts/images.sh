#!/usr/bin/env bash
# images.sh — builds the OCI images of the worker and the operator without a docker engine:
# the release binaries on a minimal Debian root filesystem (only the libraries they link:
# glibc, libgcc, OpenSSL, libcurl, zlib — and CA certificates; no shell, no package manager),
# made with mmdebstrap and assembled with buildah (vfs storage, works as root here). Writes
# uncompressed OCI archives:
#
#   dist/images/worker.tar     ghcr.io/meshchat/worker:<version>
#   dist/images/operator.tar   ghcr.io/meshchat/operator:<version>
#
# docker/Dockerfile builds the same layout for users with docker. Load the archives into kind
# (`kind load image-archive dist/images/worker.tar`), k3d (`k3d image import`), or push them
# with skopeo (README.md, "Images").
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "==> $*" >&2; }

REGISTRY="${IMAGE_REGISTRY:-ghcr.io/meshchat}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# where the sources are: IMAGE_SOURCE, else the clone's origin
# (without credentials a CI clone's URL may carry)
SOURCE="${IMAGE_SOURCE:-$( (git config --get remote.origin.url 2>/dev/null || pwd) | sed -E 's#://[^@/]+@#://#')}"
OUT="${IMAGES_OUT:-dist/images}"
CACHE="$HOME/.cache/meshchat/images"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshchat/target}"
# what the binaries link, besides the C library (checked by tests/tests/images.rs: ldd finds all)
PACKAGES=libc6,libgcc-s1,libssl3,libcurl4,zlib1g,ca-certificates
SUITE=bookworm

missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
# skopeo: pushes the archives (README.md), and the image tests read them with it
command -v skopeo >/dev/null || missing+=(skopeo)
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]} (builds images without a docker engine)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "cargo build --release (first time: several minutes)"
cargo build --release --locked --bin meshchat-worker --bin meshchat-operator >&2

# The base layer, cached per package set and day (security updates arrive with the next day's).
mkdir -p "$CACHE" "$OUT"
base="$CACHE/base-$SUITE-$(echo "$PACKAGES" | sha256sum | cut -c1-12)-$(date -u +%Y%m%d).tar"
if [ ! -f "$base" ]; then
  say "mmdebstrap: $SUITE root filesystem with $PACKAGES"
  rm -rf "$CACHE"/base-*.tar
  # extract: unpacked, not installed — no maintainer script runs, so what they would do is
  # done here: the CA bundle update-ca-certificates writes, the accounts; then everything that
  # runs a program (shells, dpkg, apt, debconf, perl) and the docs but copyrights go
  root="$CACHE/rootfs.partial"
  rm -rf "$root"
  epoch="$(date -u -d "$(date -u +%Y-%m-%d)" +%s)"
  SOURCE_DATE_EPOCH="$epoch" mmdebstrap --quiet --variant=extract --include="$PACKAGES" "$SUITE" "$root" >&2
  cat "$root"/usr/share/ca-certificates/mozilla/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nmeshchat:x:10001:10001:meshchat:/nonexistent:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nmeshchat:x:10001:\n' > "$root/etc/group"
  rm -rf "$root"/usr/bin "$root"/usr/sbin "$root"/bin "$root"/sbin "$root"/usr/share/perl5 \
    "$root"/usr/share/debconf "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale \
    "$root"/usr/share/lintian "$root"/var/cache/debconf "$root"/var/lib/dpkg "$root"/var/lib/apt \
    "$root"/etc/apt "$root"/etc/dpkg "$root"/etc/debconf.conf "$root"/var/log/*
  find "$root"/usr/share/doc -type f ! -name copyright -delete
  chmod 1777 "$root/tmp"
  tar --numeric-owner --owner=0 --group=0 --sort=name --mtime="@$epoch" -C "$root" -cf "$CACHE/partial.tar" .
  rm -rf "$root"
  mv "$CACHE/partial.tar" "$base"
fi

# buildah's own storage (vfs keeps a full copy per layer) lives only as long as this run
work=$(mktemp -d "${TMPDIR:-/tmp}/meshchat-images.XXXXXX")
trap 'buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs rmi --all --force >/dev/null 2>&1; rm -rf "$work"' EXIT
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
say "buildah: assembling the images"
# the root filesystem as a layer of its own, shared by both images (pulled once per node)
ctr=$("${B[@]}" from --quiet scratch)
"${B[@]}" add --quiet "$ctr" "$base" / >/dev/null
"${B[@]}" commit --quiet --format oci --rm "$ctr" localhost/meshchat-base >/dev/null
image() { # name, binary, ports...
  local name=$1 bin=$2; shift 2
  local ctr
  ctr=$("${B[@]}" from --quiet localhost/meshchat-base)
  trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' RETURN
  # without the line tables (a third of the size): backtraces keep the function names
  local stripped="$CACHE/$bin"
  strip --strip-debug -o "$stripped" "$CARGO_TARGET_DIR/release/$bin"
  "${B[@]}" copy --quiet --chmod 0755 "$ctr" "$stripped" "/usr/local/bin/$bin" >/dev/null
  rm -f "$stripped"
  local cfg=(--user 10001:10001 --workingdir / --entrypoint "[\"/usr/local/bin/$bin\"]"
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    --label "org.opencontainers.image.title=meshchat-$name"
    --label "org.opencontainers.image.description=MeshChat $name"
    --label "org.opencontainers.image.version=$VERSION"
    --label "org.opencontainers.image.revision=$REVISION"
    --label "org.opencontainers.image.source=$SOURCE"
    --label "org.opencontainers.image.licenses=Apache-2.0"
    --label "org.opencontainers.image.base.name=debian:$SUITE (mmdebstrap: $PACKAGES)")
  for p in "$@"; do cfg+=(--port "$p"); done
  "${B[@]}" config "${cfg[@]}" "$ctr"
  rm -f "$OUT/$name.tar"
  "${B[@]}" commit --quiet --format oci --disable-compression --rm "$ctr" \
    "oci-archive:$OUT/$name.tar:$REGISTRY/$name:$VERSION" >/dev/null
  trap - RETURN
  # what a registry would store: the layers compressed
  local gz
  gz=$(tar -xOf "$OUT/$name.tar" --wildcards 'blobs/sha256/*' | gzip -6 | wc -c)
  printf '%s %s:%s  %s (%d MB uncompressed, ~%d MB compressed)\n' "$OUT/$name.tar" "$REGISTRY/$name" \
    "$VERSION" "$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' <(tar -xOf "$OUT/$name.tar" index.json) | head -c 19)" \
    $(( $(stat -c %s "$OUT/$name.tar") / 1048576 )) $(( gz / 1048576 ))
}
image worker meshchat-worker 8080/tcp 9080/tcp
image operator meshchat-operator 8080/tcp
