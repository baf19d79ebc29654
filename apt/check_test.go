package apt

import (
	"errors"
	"testing"
	"time"
)

func TestCheckSuite(t *testing.T) {
	r := &Release{Suite: "stable", Codename: "bookworm"}
	tests := []struct {
		want string
		err  error
	}{
		{"stable", nil},
		{"bookworm", nil},
		{"Bookworm", ErrSuiteMismatch},
		{"oldstable", ErrSuiteMismatch},
		{"bookworm-security", ErrSuiteMismatch},
		{"", ErrSuiteMismatch},
		{"./", nil}, // flat repository
	}
	for _, tc := range tests {
		if err := CheckSuite(r, tc.want); !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("CheckSuite(%q) = %v, want %v", tc.want, err, tc.err)
		}
	}
}

func TestCheckDate(t *testing.T) {
	now := time.Date(2024, 6, 10, 12, 0, 0, 0, time.UTC)
	last := now.Add(-24 * time.Hour)
	skew := 10 * time.Minute
	tests := []struct {
		name string
		date time.Time
		last time.Time
		err  error
	}{
		{"newer than last", now.Add(-time.Hour), last, nil},
		{"same as last", last, last, nil},
		{"first sync", now.Add(-1000 * time.Hour), time.Time{}, nil},
		{"rollback by a second", last.Add(-time.Second), last, ErrRollback},
		{"rollback by a year", last.AddDate(-1, 0, 0), last, ErrRollback},
		{"within skew", now.Add(skew), last, nil},
		{"beyond skew", now.Add(skew + time.Second), last, ErrFutureDate},
		{"far future", now.AddDate(1, 0, 0), time.Time{}, ErrFutureDate},
		{"missing", time.Time{}, last, ErrMissingDate},
	}
	for _, tc := range tests {
		err := CheckDate(&Release{Date: tc.date}, tc.last, now, skew)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: CheckDate = %v, want %v", tc.name, err, tc.err)
		}
	}
}

func TestCheckValidUntil(t *testing.T) {
	now := time.Date(2024, 6, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		until time.Time
		err   error
	}{
		{"absent", time.Time{}, nil},
		{"future", now.Add(time.Hour), nil},
		{"exactly now", now, nil},
		{"a second ago", now.Add(-time.Second), ErrExpired},
		{"last week", now.AddDate(0, 0, -7), ErrExpired},
	}
	for _, tc := range tests {
		err := CheckValidUntil(&Release{ValidUntil: tc.until}, now)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: CheckValidUntil = %v, want %v", tc.name, err, tc.err)
		}
	}
}
