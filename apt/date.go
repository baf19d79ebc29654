package apt

import (
	"fmt"
	"strings"
	"time"
)

// ParseDate parses a Release Date or Valid-Until value the way apt does:
// "Www, D Mon YYYY HH:MM:SS ZONE" where the day has one or two digits and
// ZONE is UTC, GMT, Z or a numeric zone equal to zero ("+0000"). apt
// refuses other zones, so accepting them here would let a mirror serve a
// Release its clients reject. The weekday is checked only for form, as apt
// does. The result is in UTC.
func ParseDate(s string) (time.Time, error) {
	f := strings.Fields(s)
	if len(f) != 6 || len(f[0]) != 4 || f[0][3] != ',' {
		return time.Time{}, fmt.Errorf("date %q: want \"Sat, 10 Jun 2023 08:52:18 UTC\"", clip(s))
	}
	if !zeroZone(f[5]) {
		return time.Time{}, fmt.Errorf("date %q: time zone %q: want UTC, GMT, Z or +0000", clip(s), clip(f[5]))
	}
	t, err := time.ParseInLocation("Mon, 2 Jan 2006 15:04:05", strings.Join(f[:5], " "), time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("date %q: %v", clip(s), err)
	}
	return t, nil
}

func zeroZone(z string) bool {
	switch z {
	case "UTC", "GMT", "Z":
		return true
	}
	if z[0] == '+' || z[0] == '-' {
		z = z[1:]
	}
	if z == "" || len(z) > 4 {
		return false
	}
	for i := 0; i < len(z); i++ {
		if z[i] != '0' {
			return false
		}
	}
	return true
}

// FormatDate formats t (converted to UTC, truncated to seconds) the way the
// Debian archive writes Date and Valid-Until: "Sat, 10 Jun 2023 08:52:18
// UTC". ParseDate reads it back.
func FormatDate(t time.Time) string {
	return t.UTC().Format("Mon, 02 Jan 2006 15:04:05 UTC")
}
