package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"gatehouse/bastion"
	"gatehouse/mirror"
	"gatehouse/mirror/serve"
)

// fileConfig is the whole configuration file. Each package owns the struct of
// its own table; this type only assembles them.
type fileConfig struct {
	// StateDir holds pool, snapshots, keys and state (default /var/lib/gatehouse).
	StateDir string               `toml:"state_dir"`
	Mirror   []mirror.Config      `toml:"mirror"`
	Serve    serve.Config         `toml:"serve"`
	Signing  mirror.SigningConfig `toml:"signing"`
	Import   mirror.ImportConfig  `toml:"import"`
	// Status says who sees the bastion's sessions on the status page.
	Status statusConfig `toml:"status"`
	// Bastion is nil when the file has no [bastion] table.
	Bastion *bastion.Config `toml:"bastion"`
}

const defaultStateDir = "/var/lib/gatehouse"

// loadConfig reads and strictly decodes the configuration file at path: TOML
// syntax errors and unknown (e.g. misspelled) keys are usage errors naming the
// file, line and key.
func loadConfig(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, usageErrorf("config file %s does not exist: create one with 'gatehouse init', or pass --config FILE", path)
		}
		return nil, usageErrorf("reading config: %v", err)
	}
	return parseConfig(path, data)
}

func parseConfig(path string, data []byte) (*fileConfig, error) {
	var c fileConfig
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, usageErrorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, usageErrorf("%s: %v", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var msgs []string
		for _, k := range und {
			msgs = append(msgs, fmt.Sprintf("%s:%d: unknown key %q", path, keyLine(data, k), k.String()))
		}
		return nil, usageErrorf("%s\n(check the spelling against the commented example from 'gatehouse init' or configs/gatehouse.toml)", strings.Join(msgs, "\n"))
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir
	}
	if c.Bastion != nil {
		c.Bastion.Defaults()
		if err := c.Bastion.Validate(); err != nil {
			return nil, usageErrorf("%s: %v", path, err)
		}
	}
	if _, err := c.Status.prefixes(); err != nil {
		return nil, usageErrorf("%s:%d: [status] %v", path, keyLine(data, toml.Key{"status", "sessions_from"}), err)
	}
	if err := c.Serve.Validate(); err != nil {
		return nil, usageErrorf("%s: %v", path, err)
	}
	if c.Serve.MinSendRate != "" {
		if _, err := mirror.ParseRate(c.Serve.MinSendRate); err != nil {
			return nil, usageErrorf("%s:%d: [serve] min_send_rate: %v", path, keyLine(data, toml.Key{"serve", "min_send_rate"}), err)
		}
	}
	seen := map[string]bool{}
	for i := range c.Mirror {
		m := &c.Mirror[i]
		m.Defaults()
		if err := m.Validate(); err != nil {
			return nil, usageErrorf("%s: %v", path, err)
		}
		if m.Mode == mirror.ModeFiltered && c.Signing.Key == "" {
			return nil, usageErrorf("%s: [[mirror]] name=%q: mode = \"filtered\" re-signs with the appliance's archive key: set [signing] key (create it with 'gatehouse keys init-archive-key')", path, m.Name)
		}
		if m.Name == "recordings" {
			// The status page serves session replay under /recordings/.
			return nil, usageErrorf("%s: [[mirror]] name %q is reserved for the status page's session replay; choose another name", path, m.Name)
		}
		if seen[m.Name] {
			return nil, usageErrorf("%s: two [[mirror]] tables are named %q; names must be unique", path, m.Name)
		}
		seen[m.Name] = true
	}
	return &c, nil
}

// keyLine finds the line on which the last component of key is defined. TOML
// decoders do not expose positions of undecoded keys, so this scans the text:
// good enough to point an operator at a typo. 0 means "not found".
func keyLine(data []byte, key toml.Key) int {
	if len(key) == 0 {
		return 0
	}
	last := regexp.QuoteMeta(key[len(key)-1])
	keyRe := regexp.MustCompile(`^\s*(?:"` + last + `"|'` + last + `'|` + last + `)\s*=`)
	tableRe := regexp.MustCompile(`^\s*\[\[?\s*` + regexp.QuoteMeta(key.String()) + `\s*\]\]?`)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if keyRe.MatchString(sc.Text()) || tableRe.MatchString(sc.Text()) {
			return n
		}
	}
	return 0
}

// newCheckConfigCmd validates the configuration file and changes nothing
// (like "nginx -t"): operators run it before a reload.
func newCheckConfigCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration file and exit (changes nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadServiceConfig(g)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, map[string]any{"config": g.configPath, "ok": true, "mirrors": len(c.Mirror)})
			}
			_, err = fmt.Fprintf(g.stdout, "%s: OK (%d mirrors)\n", g.configPath, len(c.Mirror))
			return err
		},
	}
}
