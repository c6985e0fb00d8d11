// Package units formats and parses byte counts the way eddy's flags, config file and output
// write them: binary units throughout (1K = 1024 bytes, "1.5 GiB").
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// FormatBytes renders a byte count with binary units, one decimal below 100 of the unit and
// none from 100 on ("512 B", "1.5 GiB", "150 MiB"), negative counts alike. The CLI's tables.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := -1
	for (v >= unit || v <= -unit) && i < len(units)-1 {
		v /= unit
		i++
	}
	if v >= 100 || v <= -100 {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// FormatBytesOneDecimal renders a byte count with binary units and always one decimal
// ("1.5 GiB", "150.0 MiB"; below 1 KiB "512 B"). The scheduler's placement reasons, which
// tasks keep, are written this way.
func FormatBytesOneDecimal(b int64) string {
	const u = 1024
	if b < u {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(u), 0
	for n := b / u; n >= u && exp < 5; n /= u {
		div *= u
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// FormatBytesUpToGiB renders a byte count in B, KiB or MiB with one decimal, or in GiB with two
// however large ("1.50 GiB", "2048.00 GiB"). The benchmarks' progress lines.
func FormatBytesUpToGiB(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// ParseSize parses a byte count: a plain number of bytes or a number with a unit (K, M, G, T,
// P with optional "i" and "B", any case, all binary: 50G = 50 GiB).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (K, M, G, T)", s)
	}
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	mult := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
	m, ok := mult[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit (want K, M, G, T or P)", s)
	}
	b := v * m
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(b), nil
}

// ParseSizeOrPercent parses "50G" (bytes) or "20%" (a percentage, of whatever the caller
// sizes against). Exactly one of the results is set (both 0 for "0").
func ParseSizeOrPercent(s string) (bytes int64, percent float64, err error) {
	t := strings.TrimSpace(s)
	if strings.HasSuffix(t, "%") {
		p, err := ParsePercent(t)
		return 0, p, err
	}
	b, err := ParseSize(t)
	return b, 0, err
}

// ParsePercent parses "10%" or "10".
func ParsePercent(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "%")
	p, err := strconv.ParseFloat(t, 64)
	if err != nil || p < 0 || p > 100 || math.IsNaN(p) {
		return 0, fmt.Errorf("percentage %q: want a number within 0-100, e.g. 20%%", s)
	}
	return p, nil
}
