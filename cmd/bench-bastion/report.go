//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is the whole benchmark outcome; -json prints it as is.
type Results struct {
	Options                  map[string]any
	Started                  time.Time
	Elapsed                  string
	Setup                    *SetupResult
	Concurrency              *ConcurrencyResult
	Throughput               []*ThroughputResult
	GatehouseFinalPeakRSSMiB float64
	GatehouseTotalCPUSeconds float64 // whole run, from wait4
	OpenSSHTotalCPUSeconds   float64 // whole run, sshd and its reaped children, from wait4
	TempDir                  string  `json:",omitempty"`
}

// SetupResult compares `ssh -J jump target true` wall times.
type SetupResult struct {
	Runs               int
	Gatehouse, OpenSSH SetupSide
	Ratio              float64 // gatehouse median / OpenSSH median; lower is better
}

// SetupSide is one jump host's setup times.
type SetupSide struct {
	MedianMs, MinMs, P90Ms float64
	JumpCPUmsPerLogin      float64
	AllMs                  []float64
}

// ThroughputResult compares bulk transfer rates for one cipher.
type ThroughputResult struct {
	Cipher             string
	MiB, Reps          int
	Gatehouse, OpenSSH ThroughputSide
	Ratio              float64 // gatehouse median / OpenSSH median; higher is better
}

// ThroughputSide is one jump host's transfer rates (MB = 10^6 bytes).
type ThroughputSide struct {
	MedianMBps           float64
	AllMBps              []float64
	JumpCPUSecondsPerGiB float64
}

// ConcurrencyResult compares how many simultaneous jump sessions succeed.
type ConcurrencyResult struct {
	Sessions, Inflight int
	Gatehouse, OpenSSH ConcurrencySide
}

// ConcurrencySide is one jump host's concurrency outcome.
type ConcurrencySide struct {
	Succeeded, Failed int
	Failures          map[string]int `json:",omitempty"`
	OpenSeconds       float64        // until every attempt had succeeded or failed
	PSSMiB            float64        // jump host (and descendants) while all sessions were open
	Processes         int            // jump host processes while all sessions were open
	PeakRSSMiB        float64        `json:",omitempty"` // gatehouse only: VmHWM
	JumpCPUSeconds    float64
}

func (o options) export() map[string]any {
	return map[string]any{
		"runs": o.runs, "mib": o.mib, "reps": o.reps, "sessions": o.sessions,
		"inflight": o.inflight, "jump_kex": o.jumpKex, "ciphers": o.ciphers, "jumps": o.jumps,
		"cpus": runtime.NumCPU(), "go": runtime.Version(),
	}
}

func printTable(w io.Writer, r *Results) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "measurement\tgatehouse\topenssh\tratio g/o\ttarget\n")
	if s := r.Setup; s != nil {
		fmt.Fprintf(tw, "ssh -J … true median (%d runs)\t%.1f ms\t%.1f ms\t%.2f\t≤ 0.90 %s\n", s.Runs, s.Gatehouse.MedianMs, s.OpenSSH.MedianMs, s.Ratio, verdict(s.Ratio <= 0.9))
		fmt.Fprintf(tw, "  min / p90\t%.1f / %.1f ms\t%.1f / %.1f ms\t\t\n", s.Gatehouse.MinMs, s.Gatehouse.P90Ms, s.OpenSSH.MinMs, s.OpenSSH.P90Ms)
		fmt.Fprintf(tw, "  jump CPU per login\t%.1f ms\t%.1f ms\t%.2f\t\n", s.Gatehouse.JumpCPUmsPerLogin, s.OpenSSH.JumpCPUmsPerLogin, ratio(s.Gatehouse.JumpCPUmsPerLogin, s.OpenSSH.JumpCPUmsPerLogin))
	}
	if c := r.Concurrency; c != nil {
		fmt.Fprintf(tw, "concurrent sessions ok (of %d, %d in flight)\t%d\t%d\t\tall %s\n", c.Sessions, c.Inflight, c.Gatehouse.Succeeded, c.OpenSSH.Succeeded, verdict(c.Gatehouse.Succeeded == c.Sessions))
		fmt.Fprintf(tw, "  time to open all\t%.2f s\t%.2f s\t\t\n", c.Gatehouse.OpenSeconds, c.OpenSSH.OpenSeconds)
		fmt.Fprintf(tw, "  jump PSS with all open\t%.1f MiB (%d proc)\t%.1f MiB (%d proc)\t\t\n", c.Gatehouse.PSSMiB, c.Gatehouse.Processes, c.OpenSSH.PSSMiB, c.OpenSSH.Processes)
		fmt.Fprintf(tw, "  bastion peak RSS (VmHWM)\t%.1f MiB\t\t\t≤ 100 MiB %s\n", c.Gatehouse.PeakRSSMiB, verdict(c.Gatehouse.PeakRSSMiB <= 100))
		fmt.Fprintf(tw, "  jump CPU for the phase\t%.2f s\t%.2f s\t\t\n", c.Gatehouse.JumpCPUSeconds, c.OpenSSH.JumpCPUSeconds)
	}
	for _, t := range r.Throughput {
		want := 1.0
		if strings.HasPrefix(t.Cipher, "chacha20") {
			want = 0.9
		}
		fmt.Fprintf(tw, "throughput %s (%d MiB, median of %d)\t%.1f MB/s\t%.1f MB/s\t%.2f\t≥ %.2f %s\n", t.Cipher, t.MiB, t.Reps, t.Gatehouse.MedianMBps, t.OpenSSH.MedianMBps, t.Ratio, want, verdict(t.Ratio >= want))
		cpuTarget := ""
		if want == 1.0 {
			cpuTarget = fmt.Sprintf("≤ 2.00 s %s", verdict(t.Gatehouse.JumpCPUSecondsPerGiB <= 2))
		}
		fmt.Fprintf(tw, "  jump CPU per GiB\t%.2f s\t%.2f s\t%.2f\t%s\n", t.Gatehouse.JumpCPUSecondsPerGiB, t.OpenSSH.JumpCPUSecondsPerGiB, ratio(t.Gatehouse.JumpCPUSecondsPerGiB, t.OpenSSH.JumpCPUSecondsPerGiB), cpuTarget)
	}
	tw.Flush()
	if c := r.Concurrency; c != nil {
		for _, s := range []struct {
			name string
			f    map[string]int
		}{{"gatehouse", c.Gatehouse.Failures}, {"openssh", c.OpenSSH.Failures}} {
			keys := make([]string, 0, len(s.f))
			for k := range s.f {
				keys = append(keys, k)
			}
			sort.Slice(keys, func(i, j int) bool { return s.f[keys[i]] > s.f[keys[j]] })
			for _, k := range keys {
				fmt.Fprintf(w, "%s concurrency failures: %d× %s\n", s.name, s.f[k], k)
			}
		}
	}
	fmt.Fprintf(w, "bastion peak RSS over the whole run: %.1f MiB\n", r.GatehouseFinalPeakRSSMiB)
	fmt.Fprintf(w, "jump host CPU over the whole run (wait4): gatehouse %.2f s, openssh %.2f s; elapsed %s\n", r.GatehouseTotalCPUSeconds, r.OpenSSHTotalCPUSeconds, r.Elapsed)
	if r.TempDir != "" {
		fmt.Fprintf(w, "kept: %s\n", r.TempDir)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func median(v []float64) float64 { return percentile(v, 0.5) }

// percentile interpolates linearly between the closest ranks.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	x := p * float64(len(s)-1)
	lo := int(math.Floor(x))
	hi := int(math.Ceil(x))
	return s[lo] + (s[hi]-s[lo])*(x-float64(lo))
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0 // JSON has no NaN; 0 reads as "no comparison"
	}
	return round(a/b, 3)
}

func round(v float64, digits int) float64 {
	m := math.Pow(10, float64(digits))
	return math.Round(v*m) / m
}

func roundAll(v []float64, digits int) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = round(x, digits)
	}
	return out
}
