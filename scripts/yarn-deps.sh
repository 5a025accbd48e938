#!/bin/sh
# The Hadoop YARN daemons of tests/yarn (ResourceManager, NodeManager), as jars from Maven
# Central, cached outside the repository: $KF_TEST_CACHE/hadoop-3.5.0-<pom hash>/jars.
#
#   scripts/yarn-deps.sh           resolve unless already done; print the cache directory
#   scripts/yarn-deps.sh --check   print the cache directory if it is complete, else exit 3
#
# The pom below is the recipe; its hash keys the cache, so editing it resolves afresh. A build
# resolves into a temporary directory, renames it into place, then writes the stamp file: a
# directory without the stamp is an interrupted build and is redone.
set -eu

CACHE=${KF_TEST_CACHE:-/opt/kernelfleet-test}

# The unshaded server artifacts (RM, NM; the RM's web app needs the timeline service's classes
# even with the timeline service off). Not hadoop-client-minicluster: its shaded, minimized
# ZooKeeper lacks org.apache.zookeeper.Testable, so an HA RM dies at start with
# NoClassDefFoundError (ZKCuratorManager). bouncycastle 1.82: what Hadoop 3.5.0 pins
# (bouncycastle.version) and no longer bundles (HADOOP-17324); the RM's proxy CA needs it.
# hadoop-common brings reload4j and slf4j-reload4j, which the daemons' logging needs.
POM=$(cat <<'EOF'
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kernelfleet.test</groupId>
  <artifactId>hadoop-yarn-daemons</artifactId>
  <version>3.5.0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-yarn-server-resourcemanager</artifactId><version>3.5.0</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-yarn-server-nodemanager</artifactId><version>3.5.0</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-yarn-server-timelineservice</artifactId><version>3.5.0</version></dependency>
    <dependency><groupId>org.bouncycastle</groupId><artifactId>bcprov-jdk18on</artifactId><version>1.82</version></dependency>
    <dependency><groupId>org.bouncycastle</groupId><artifactId>bcpkix-jdk18on</artifactId><version>1.82</version></dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version></plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
EOF
)

HASH=$(printf '%s\n' "$POM" | sha256sum | cut -c1-12)
DIR=$CACHE/hadoop-3.5.0-$HASH
STAMP=$DIR/.complete

if [ -f "$STAMP" ]; then
  echo "$DIR"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "the YARN jars are not resolved: run 'make yarn-deps' (or scripts/yarn-deps.sh)" >&2
  exit 3
fi
command -v mvn >/dev/null 2>&1 || { echo "mvn is missing (apt-get install maven)" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.hadoop-3.5.0.lock"
flock 9  # one build at a time; the other waits, then finds the stamp
if [ -f "$STAMP" ]; then
  echo "$DIR"
  exit 0
fi
rm -rf "$DIR" "$CACHE/.hadoop-3.5.0-$HASH".*  # what an interrupted build left
TMP=$(mktemp -d "$CACHE/.hadoop-3.5.0-$HASH.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
printf '%s\n' "$POM" > "$TMP/pom.xml"
echo "resolving the Hadoop YARN jars into $DIR" >&2
(cd "$TMP" && mvn -q -B -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$TMP/jars" >"$TMP/mvn.log" 2>&1) || {
  cat "$TMP/mvn.log" >&2
  exit 1
}
chmod 755 "$TMP"
mv -T "$TMP" "$DIR"
trap - EXIT
touch "$STAMP"
echo "$DIR"
