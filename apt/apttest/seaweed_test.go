package apttest

import (
	"os"
	"strings"
	"testing"
)

// TestSeaweedVersionMatchesWrapper: the version the cache key names is the
// one the wrapper module builds, so a bump of one without the other cannot
// run a stale cached weed.
func TestSeaweedVersionMatchesWrapper(t *testing.T) {
	d, err := wrapperDir()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(d + "/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "github.com/seaweedfs/seaweedfs "+SeaweedVersion+" ") {
		t.Errorf("testdata/seaweed-wrapper/go.mod does not require seaweedfs %s (update SeaweedVersion with it)", SeaweedVersion)
	}
	if !strings.Contains(string(b), "replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0") {
		t.Error("testdata/seaweed-wrapper/go.mod lost seaweedfs's replace directive")
	}
}
