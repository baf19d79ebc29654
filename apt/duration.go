package apt

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a duration as operators write it in gatehouse's
// configuration: a Go duration ("90s", "10m", "24h", "1h30m") or whole days
// ("30d"), the unit Valid-Until periods are naturally written in. It lives
// here, below both halves, because mirror and bastion may not import each
// other and the configuration must accept the same forms in every table.
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 && days < 100000 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: use a number with a unit, like \"90s\", \"10m\", \"24h\" or \"30d\"", clip(s))
	}
	return v, nil
}
