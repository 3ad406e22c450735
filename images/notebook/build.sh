#!/usr/bin/env bash
# Builds the notebook image that the docker and kubernetes backends run, with no
# registry: debootstrap makes a Debian root filesystem from the host's own mirror,
# a chroot adds the user jovyan and JupyterLab in /opt/notebook, and `docker import`
# turns it into demanager/notebook:latest, also tagged as every image the default
# catalog's profiles name. /opt/demanager-sync holds the object-storage sync agent that
# the kubernetes backend runs beside the notebook (boto3, pydantic and the few modules
# of demanager that agent-modules.txt lists). A recipe hash in a label makes a rebuild
# of an unchanged recipe a matter of seconds. docs/notebook-image.md explains it all.
#
# Environment: DOCKER_HOST (the daemon), DEBIAN_MIRROR (default: the host's apt
# mirror), CATALOG_PYTHON (a Python where demanager is installed; default the
# repository's .venv), NOTEBOOK_IMAGE_REBUILD=1 (ignore both caches), XDG_CACHE_HOME,
# TMPDIR.
set -euo pipefail
umask 022

readonly IMAGE=demanager/notebook:latest
readonly RECIPE_LABEL=io.demanager.recipe
readonly PACKAGES=python3,python3-venv,ca-certificates
readonly PIP_REQUIREMENTS=("jupyterlab>=4.2" "ipykernel>=6.29")
readonly VENV=/opt/notebook
readonly SYNC_VENV=/opt/demanager-sync
readonly SYNC_REQUIREMENTS=("boto3>=1.34" "pydantic>=2.7")
readonly NB_USER=jovyan NB_UID=1000 NB_GID=100
readonly NB_HOME=/home/jovyan
readonly CONTAINER_PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
readonly here repo
readonly script=$here/build.sh
python=${CATALOG_PYTHON:-$repo/.venv/bin/python}
mapfile -t agent_modules < <(grep -v '^#' "$here/agent-modules.txt" | grep .)
readonly agent_modules

say() { printf '%s\n' "$*"; }
# Seconds since the step began (lap=$SECONDS), for the progress lines.
lap=$SECONDS
took() { printf '%d s' $((SECONDS - lap)); }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a step with its output in a log; on failure show the log's tail, then fail.
logged() {
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    die "$1 failed (the lines above are the end of its output)"
  fi
}

# The first URI of the first enabled deb822 stanza (*.sources) whose Suites hold $1.
mirror_from_sources() {
  awk -v release="$1" '
    BEGIN { RS = ""; FS = "\n" }
    {
      delete field; key = ""
      for (i = 1; i <= NF; i++) {
        line = $i
        if (line ~ /^#/) continue
        if (line ~ /^[ \t]/) { if (key != "") field[key] = field[key] " " line; continue }
        if (!match(line, /^[A-Za-z0-9-]+:/)) continue
        key = tolower(substr(line, 1, RLENGTH - 1))
        field[key] = substr(line, RLENGTH + 1)
      }
      if (tolower(field["enabled"]) ~ /^[ \t]*no[ \t]*$/) next
      if ((" " field["types"] " ") !~ /[ \t]deb[ \t]/) next
      n = split(field["suites"], suites, /[ \t]+/)
      for (j = 1; j <= n; j++) if (suites[j] == release) {
        split(field["uris"], uris, /[ \t]+/)
        for (k = 1; k in uris; k++) if (uris[k] != "") { print uris[k]; exit }
      }
    }' "$2"
}

# The URI of the first one-line "deb [options] URI SUITE …" entry for suite $1.
mirror_from_list() {
  awk -v release="$1" '
    $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == release) { print $i; exit }
    }' "$2"
}

host_mirror() {
  local release=$1 file uri
  for file in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
    [ -r "$file" ] || continue
    uri=$(mirror_from_sources "$release" "$file")
    [ -z "$uri" ] || { say "$uri"; return; }
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$file" ] || continue
    uri=$(mirror_from_list "$release" "$file")
    [ -z "$uri" ] || { say "$uri"; return; }
  done
}

# Every image the default catalog's profiles name, once each: the profile's image
# (namespace/name:tag) and any a container backend's launch section puts instead. The
# project's own loader reads them, so its defaults and its checks are the backends'.
catalog_images() {
  "$python" - <<'EOF'
from demanager.catalog import load_catalog

refs = {}
for profile in load_catalog(None).profiles.values():
    refs[profile.image] = None
    for backend in ("docker", "kubernetes"):
        image = profile.launch.get(backend, {}).get("image")
        if image:
            refs[str(image)] = None
print("\n".join(refs))
EOF
}

image_label() {
  docker image inspect --format "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$IMAGE" 2>/dev/null || true
}

image_id() { docker image inspect --format '{{ .Id }}' "$1" 2>/dev/null || true; }

apply_tags() {
  local ref
  for ref in "${catalog_refs[@]}"; do
    docker tag "$IMAGE" "$ref"
  done
  say "tagged $IMAGE as ${#catalog_refs[@]} catalog image(s): ${catalog_refs[*]}"
}

# --- what to build, and whether it is built already --------------------------------

command -v docker >/dev/null || die "the docker command is missing (apt-get install docker.io)"
if ! docker_error=$(docker version --format '{{ .Server.Version }}' 2>&1 >/dev/null); then
  die "no Docker daemon answers at ${DOCKER_HOST:-unix:///var/run/docker.sock} (set DOCKER_HOST): ${docker_error##*$'\n'}"
fi
[ -x "$python" ] || die "$python is missing: run make install (or set CATALOG_PYTHON)"
catalog_out=$(catalog_images) || die "cannot read the image names from the default catalog"
mapfile -t catalog_refs < <(printf '%s\n' "$catalog_out" | grep .)

# shellcheck disable=SC1091  # os-release is the host's, not the repository's
codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
[ -n "$codename" ] || die "/etc/os-release names no VERSION_CODENAME"
mirror=${DEBIAN_MIRROR:-$(host_mirror "$codename")}
[ -n "$mirror" ] || die "no Debian mirror for $codename in /etc/apt; set DEBIAN_MIRROR"
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)

# Everything that decides debootstrap's result, and everything that decides the image's.
debootstrap_args=(--variant=minbase "--include=$PACKAGES" "$codename")
debootstrap_recipe="debootstrap ${debootstrap_args[*]} $mirror arch=$arch"
debootstrap_key=$(printf '%s\n' "$debootstrap_recipe" | sha256sum | cut -c1-16)
recipe=$({
  cat "$script"
  printf '%s\n' "$debootstrap_recipe" "${PIP_REQUIREMENTS[@]}" "${SYNC_REQUIREMENTS[@]}"
  # The agent's code is part of the image: a change to it is a new recipe.
  for module in "${agent_modules[@]}"; do
    printf '%s\n' "$module"
    cat "$repo/src/demanager/$module"
  done
} | sha256sum | cut -d' ' -f1)

cache=${XDG_CACHE_HOME:-$HOME/.cache}/demanager/image
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9 # one build at a time per cache

if [ "${NOTEBOOK_IMAGE_REBUILD:-}" != 1 ] && [ "$(image_label)" = "$recipe" ]; then
  say "$IMAGE is up to date (recipe ${recipe:0:12})"
  apply_tags
  exit 0
fi

# --- build -------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || die "debootstrap needs root (the rootfs holds files of other owners and a chroot)"
command -v chroot >/dev/null || die "chroot is missing (coreutils)"

work=
cleanup() {
  [ -n "$work" ] || return 0
  # Never remove through a mount: unmount whatever is left under the build dir first.
  local target
  findmnt -rn -o TARGET | awk -v p="$work/" 'index($0, p) == 1' | sort -r \
    | while read -r target; do umount -l "$target" || true; done
  rm -rf --one-file-system "$work"
}
# A signal that reaches only this shell lets the running step finish, then cleans up:
# nothing is removed under a debootstrap or pip still writing there.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
work=$(mktemp -d "${TMPDIR:-/var/tmp}/demanager-image.XXXXXX")
rootfs=$work/rootfs
mkdir "$rootfs"

tarball=$cache/debootstrap-$debootstrap_key.tar
if [ "${NOTEBOOK_IMAGE_REBUILD:-}" != 1 ] && [ -s "$tarball" ]; then
  say "debootstrap $codename: cached ($tarball)"
  tar --numeric-owner -xpf "$tarball" -C "$rootfs"
else
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
  say "debootstrap $codename from $mirror…"
  lap=$SECONDS
  logged "$work/debootstrap.log" debootstrap "${debootstrap_args[@]}" "$rootfs" "$mirror"
  say "  done in $(took)"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
  rm -f "$cache"/debootstrap-*.tar # the one kept is the one this recipe needs
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

# pip in the chroot resolves names with the host's resolver configuration and trusts
# the certificates the host trusts (a TLS-inspecting proxy's CA among them), for the
# build only; /dev is bound only where debootstrap could not make its device nodes.
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
host_ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
build_ca=
if [ -r "$host_ca" ]; then
  build_ca=/tmp/build-ca.crt
  cp -L "$host_ca" "$rootfs$build_ca"
fi
if [ ! -c "$rootfs/dev/null" ]; then
  mount --bind /dev "$rootfs/dev"
fi

in_chroot() {
  local -a env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME=/root LANG=C.UTF-8)
  local var
  for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
    PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
    [ -z "${!var:-}" ] || env+=("$var=${!var}")
  done
  [ -z "$build_ca" ] || env+=("PIP_CERT=$build_ca")
  env -i "${env[@]}" chroot "$rootfs" "$@"
}

say "user $NB_USER ($NB_UID:$NB_GID), $NB_HOME/work…"
in_chroot useradd --uid "$NB_UID" --gid "$NB_GID" --home-dir "$NB_HOME" --create-home \
  --shell /bin/bash "$NB_USER"
# Docker copies the mount point's owner and mode into a fresh named volume.
in_chroot install -d -o "$NB_UID" -g "$NB_GID" -m 0755 "$NB_HOME/work"
chmod 0755 "$rootfs$NB_HOME"

say "pip install ${PIP_REQUIREMENTS[*]} into $VENV…"
lap=$SECONDS
logged "$work/venv.log" in_chroot python3 -m venv "$VENV"
logged "$work/pip.log" in_chroot "$VENV/bin/pip" install --no-cache-dir --no-input \
  --disable-pip-version-check --progress-bar off "${PIP_REQUIREMENTS[@]}"
say "  jupyterlab $(in_chroot "$VENV/bin/jupyter" lab --version), done in $(took)"

# A venv of its own, so that the notebook's kernels never see the agent's packages.
say "sync agent: pip install ${SYNC_REQUIREMENTS[*]} into $SYNC_VENV…"
lap=$SECONDS
logged "$work/sync-venv.log" in_chroot python3 -m venv "$SYNC_VENV"
logged "$work/sync-pip.log" in_chroot "$SYNC_VENV/bin/pip" install --no-cache-dir --no-input \
  --disable-pip-version-check --progress-bar off "${SYNC_REQUIREMENTS[@]}"
site=$(in_chroot "$SYNC_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for module in "${agent_modules[@]}"; do
  install -D -m 0644 "$repo/src/demanager/$module" "$rootfs$site/demanager/$module"
done
logged "$work/sync-agent.log" in_chroot "$SYNC_VENV/bin/python" -m demanager.objectstore.agent --help
in_chroot "$SYNC_VENV/bin/python" -m compileall -q "$site/demanager" >/dev/null
say "  done in $(took)"

# What the image needs not carry. The .pyc files stay: the container's user cannot
# write them, so without them every start would compile JupyterLab's imports again.
if mountpoint -q "$rootfs/dev"; then umount "$rootfs/dev"; fi
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/root/.cache \
  "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/var/log" -type f -delete

# --- import and tag ----------------------------------------------------------------

old_id=$(image_id "$IMAGE")
say "docker import…"
lap=$SECONDS
new_id=$(tar --numeric-owner -C "$rootfs" --exclude='./dev/*' -c . | docker import \
  --change "USER $NB_UID:$NB_GID" \
  --change "WORKDIR $NB_HOME/work" \
  --change "ENV PATH=$CONTAINER_PATH" \
  --change "ENV HOME=$NB_HOME" \
  --change "ENV LANG=C.UTF-8" \
  --change "EXPOSE 8888" \
  --change 'CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]' \
  --change "LABEL $RECIPE_LABEL=$recipe" \
  --message "demanager notebook image, recipe $recipe" \
  - "$IMAGE")
size=$(docker image inspect --format '{{ .Size }}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')
say "imported as $IMAGE (${new_id:7:12}, $size) in $(took)"
apply_tags

# The image this one replaces has lost its tags to it; drop it unless a container uses it.
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ] \
  && [ "$(docker image inspect --format '{{ len .RepoTags }}' "$old_id" 2>/dev/null)" = 0 ]; then
  docker image rm "$old_id" >/dev/null 2>&1 \
    || say "note: the previous image ${old_id:7:12} is still used by a container; kept"
fi
