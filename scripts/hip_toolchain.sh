#!/usr/bin/env bash
# A private HIP device compiler, for compiling flashopt's HIP kernels to AMDGPU code
# objects on a machine without ROCm: clang 19 (this Debian release's, which has the HIP
# front end and the AMDGPU back end), the HIP 6.4 headers (Debian unstable's
# libamdhip64-dev) and the device bitcode libraries (rocm-device-libs-17, Debian 13).
# Nothing is installed: the packages are fetched with `apt-get download` (the two newer
# suites through a private apt state whose sources come from this machine's own) and
# unpacked with `dpkg -x`. Nothing lands on PATH, so cubecl-hip-sys's build script,
# which binds against any `hipconfig` it finds there, never sees this ROCm.
#
# Usage: scripts/hip_toolchain.sh [DIR]   (default target/hip-toolchain; cached there)
# Prints DIR when it is ready: DIR/clang++ (a wrapper), DIR/hip (--hip-path),
# DIR/bitcode (--rocm-device-lib-path).
set -euo pipefail
dir=${1:-target/hip-toolchain}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -x $dir/clang++ && -e $dir/ready ]]; then
  echo "$dir"
  exit 0
fi

# Pinned versions and the SHA-256 of each package file: a version the suites no longer
# carry, or a file whose digest differs, fails here rather than compiling the kernels
# with another toolchain.
clang_version="1:19.1.7-3~deb12u1"
hip_version="6.4.3-5"
device_libs_version="6.0+git20231212.5a852ed-2"
checksums="\
89ab931a9bbfd567a76df3141af5d5ec67b01d800150e614f2c9bf4671da9b08  clang-19_1%3a19.1.7-3~deb12u1_amd64.deb
f2a3a542d41883f87a45e2d0554c1c84ccf350c836b9e8b35473dadbc34ced5e  libamdhip64-dev_6.4.3-5_amd64.deb
811c2d398ad772204ec05ffde485cbbc4c210abc5dcf0068ff9ca3e647591ce7  libclang-common-19-dev_1%3a19.1.7-3~deb12u1_amd64.deb
5daa784e1d747db320c16604729ffa805e6bfd72d3ac0b7cb0ee5f1a7ebc8aae  libclang-cpp19_1%3a19.1.7-3~deb12u1_amd64.deb
d7ec22abb56dc7d1ac7b92bea2f119a8a3ea2072fa63884baf4a157c952246a1  liblld-19_1%3a19.1.7-3~deb12u1_amd64.deb
6edf3a8b28495cdba883d9760e0dca1a81983fc497a5f989dc64d0d96d23b4aa  libllvm19_1%3a19.1.7-3~deb12u1_amd64.deb
416e084363a16a7060eaa6343ed641dfe864b8208c39170ee00a5679e4b486a2  lld-19_1%3a19.1.7-3~deb12u1_amd64.deb
fa10f0f5be5269c715492e4e3d3816f956a4d8b9098443d54052d351cfda9213  rocm-device-libs-17_6.0+git20231212.5a852ed-2_amd64.deb
"

work=$dir/work
rm -rf "$work" "$dir/root"
mkdir -p "$work/debs" "$work/state/lists/partial" "$work/cache/archives/partial" "$dir/root"

# This machine's Debian mirror (deb822 or one-line sources), with the newer suites.
mirror=$( (grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
  /etc/apt/sources.list 2>/dev/null || true) | head -1 | tr -d ' ')
mirror=${mirror:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
cat > "$work/sources.list" <<EOF
deb [signed-by=$keyring] ${mirror%/} $codename main
deb [signed-by=$keyring] ${mirror%/} trixie main
deb [signed-by=$keyring] ${mirror%/} unstable main
EOF
private=(
  -o "Dir::State=$work/state" -o "Dir::State::status=/var/lib/dpkg/status"
  -o "Dir::Cache=$work/cache" -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=-" -o "APT::Sandbox::User=root"
)
apt-get "${private[@]}" update -qq

wanted=()
# clang 19 from this machine's own release.
for p in clang-19 libclang-cpp19 libllvm19 libclang-common-19-dev lld-19 liblld-19; do
  wanted+=("$p=$clang_version")
done
wanted+=("libamdhip64-dev=$hip_version" "rocm-device-libs-17=$device_libs_version")
# Every pinned version must still be in the suites.
for w in "${wanted[@]}"; do
  if ! apt-cache "${private[@]}" madison "${w%%=*}" | awk -F'|' -v v="${w#*=}" '{ gsub(/ /, "", $2) } $2 == v { found = 1 } END { exit !found }'; then
    echo "hip_toolchain.sh: ${w%%=*} ${w#*=} is no longer in the Debian suites; pin another version and its checksum" >&2
    exit 1
  fi
done
cd "$work/debs"
apt-get "${private[@]}" download -qq "${wanted[@]}"
if ! sha256sum --quiet --strict -c <<<"$checksums"; then
  echo "hip_toolchain.sh: a package's SHA-256 differs from its pin (above)" >&2
  exit 1
fi
for deb in ./*.deb; do
  dpkg -x "$deb" "$dir/root"
done
cd "$dir"

llvm=$dir/root/usr/lib/llvm-19
bitcode=$(dirname "$(find "$dir/root" -name 'ocml.bc' | head -1)")
rm -f hip bitcode
ln -s "$dir/root/usr" hip
ln -s "$bitcode" bitcode
cat > clang++ <<EOF
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu:$llvm/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$llvm/bin/clang++" "\$@"
EOF
chmod +x clang++
./clang++ --version | head -1 >&2
ls -1 "$work/debs" > versions.txt
rm -rf "$work"
touch ready
echo "$dir"
