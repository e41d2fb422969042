# Shared steps of the demo, test and benchmark commands: packages, a build tree the postgres OS
# user can write, and running commands as that user. Sourced, not run.

PG_BIN=/usr/lib/postgresql/15/bin
export PATH="$PG_BIN:$PATH"

# Debian packages the build, the tests and the benchmarks need.
PACKAGES=(postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev libipc-run-perl
	make cmake g++ clang-14 libclang-rt-14-dev libgtest-dev libbenchmark-dev python3 python3-psycopg)

# Installs the missing packages (needs root; does nothing when all are there).
install_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "installing: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Copies the source tree into a fresh directory owned by postgres and prints its path.
# Servers refuse to run as root, and root's clone may sit where postgres cannot write.
make_work_copy() {
	local src=$1 dst
	dst=$(mktemp -d "${TMPDIR:-/tmp}/logical_audit.XXXXXX")
	if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$src" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$dst"
	else
		cp -a "$src/." "$dst"
	fi
	chown -R postgres:postgres "$dst"
	chmod 755 "$dst"
	echo "$dst"
}

# Runs a shell command as the postgres OS user.
as_postgres() {
	runuser -u postgres -- env PATH="$PATH" bash -c "$1"
}

# Builds and installs the extension with PGXS (make, then make install as root).
install_extension() {
	local dir=$1
	as_postgres "make -C '$dir' -s -j2"
	make -C "$dir" -s install >/dev/null
}
