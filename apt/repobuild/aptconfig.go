package repobuild

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteAptConfig writes a private apt configuration under dir: its own
// sources list (sourcesLines), state, cache and log directories and an
// empty dpkg status, and none of the machine's apt configuration, keys or
// sources. It returns the configuration file for APT_CONFIG or apt-get -c.
// The gatehouse demo uses it too; apttest.AptClient wraps it for tests.
func WriteAptConfig(dir, arch, sourcesLines string) (string, error) {
	for _, sub := range []string{"etc/apt.conf.d", "etc/sources.list.d", "etc/trusted.gpg.d", "etc/preferences.d",
		"state/lists/partial", "cache/archives/partial", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "state/status"), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/sources.list"), []byte(strings.TrimSpace(sourcesLines)+"\n"), 0o644); err != nil {
		return "", err
	}
	conf := fmt.Sprintf(`Dir "/";
Dir::Etc %[1]q;
Dir::Etc::main "apt.conf";
Dir::Etc::parts "apt.conf.d";
Dir::Etc::sourcelist "sources.list";
Dir::Etc::sourceparts "sources.list.d";
Dir::Etc::trusted "trusted.gpg";
Dir::Etc::trustedparts "trusted.gpg.d";
Dir::Etc::preferences "preferences";
Dir::Etc::preferencesparts "preferences.d";
Dir::State %[2]q;
Dir::State::status %[3]q;
Dir::Cache %[4]q;
Dir::Log %[5]q;
APT::Architecture %[6]q;
APT::Architectures { %[6]q; };
Acquire::Languages "none";
Acquire::Retries "0";
Acquire::http::Proxy::127.0.0.1 "DIRECT";
APT::Sandbox::User "root";
Debug::NoLocking "true";
APT::Get::Assume-Yes "true";
`, filepath.Join(dir, "etc"), filepath.Join(dir, "state"), filepath.Join(dir, "state/status"),
		filepath.Join(dir, "cache"), filepath.Join(dir, "log"), arch)
	p := filepath.Join(dir, "apt.conf")
	return p, os.WriteFile(p, []byte(conf), 0o644)
}
