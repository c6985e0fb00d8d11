package units

import "testing"

// Each formatter keeps the output of the call sites it serves.
func TestFormatBytes(t *testing.T) {
	cases := []struct {
		in                int64
		std, tenths, ugib string
	}{
		{0, "0 B", "0 B", "0 B"},
		{1023, "1023 B", "1023 B", "1023 B"},
		{1536, "1.5 KiB", "1.5 KiB", "1.5 KiB"},
		{150 << 20, "150 MiB", "150.0 MiB", "150.0 MiB"},
		{3 << 29, "1.5 GiB", "1.5 GiB", "1.50 GiB"},
		{2 << 40, "2.0 TiB", "2.0 TiB", "2048.00 GiB"},
		{1<<20 - 1, "1024 KiB", "1024.0 KiB", "1024.0 KiB"},
		{-2048, "-2.0 KiB", "-2048 B", "-2048 B"},
	}
	for _, c := range cases {
		if got := FormatBytes(c.in); got != c.std {
			t.Errorf("FormatBytes(%d) = %q, want %q", c.in, got, c.std)
		}
		if got := FormatBytesOneDecimal(c.in); got != c.tenths {
			t.Errorf("FormatBytesOneDecimal(%d) = %q, want %q", c.in, got, c.tenths)
		}
		if got := FormatBytesUpToGiB(c.in); got != c.ugib {
			t.Errorf("FormatBytesUpToGiB(%d) = %q, want %q", c.in, got, c.ugib)
		}
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{"64K", 64 << 10, false},
		{"8M", 8 << 20, false},
		{"8MiB", 8 << 20, false},
		{"50G", 50 << 30, false},
		{"50gb", 50 << 30, false},
		{"1.5G", 3 << 29, false},
		{"2T", 2 << 40, false},
		{"512m", 512 << 20, false},
		{"", 0, true},
		{"10X", 0, true},
		{"-1G", 0, true},
		{"G", 0, true},
		{"99999999P", 0, true},
	}
	for _, c := range cases {
		got, err := ParseSize(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, err=%v", c.in, got, err, c.want, c.wantErr)
		}
	}
}

func TestParseSizeOrPercent(t *testing.T) {
	cases := []struct {
		in      string
		bytes   int64
		pct     float64
		wantErr bool
	}{
		{"20%", 0, 20, false},
		{"50G", 50 << 30, 0, false},
		{"100%", 0, 100, false},
		{"101%", 0, 0, true},
		{"x%", 0, 0, true},
	}
	for _, c := range cases {
		b, p, err := ParseSizeOrPercent(c.in)
		if (err != nil) != c.wantErr || b != c.bytes || p != c.pct {
			t.Errorf("ParseSizeOrPercent(%q) = %d, %g, %v", c.in, b, p, err)
		}
	}
}
