package chunk

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseHash(t *testing.T) {
	t.Parallel()
	good := Sum([]byte("hello")).String()
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{name: "canonical", in: good},
		{name: "uppercase hex", in: strings.ToUpper(good), wantErr: true},
		{name: "mixed case", in: "A" + good[1:], wantErr: true},
		{name: "63 chars", in: good[:63], wantErr: true},
		{name: "65 chars", in: good + "0", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "0x prefix", in: "0x" + good[2:], wantErr: true},
		{name: "traversal", in: "../../etc/passwd" + good[16:], wantErr: true},
		{name: "encoded traversal", in: "%2e%2e%2f" + good[9:], wantErr: true},
		{name: "nul byte", in: good[:63] + "\x00", wantErr: true},
		{name: "non-hex letters", in: strings.Repeat("g", 64), wantErr: true},
		{name: "unicode", in: "é" + good[2:], wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHash(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseHash(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidHash) {
				t.Errorf("ParseHash(%q) error = %v, want ErrInvalidHash", tt.in, err)
			}
			if err == nil && h.String() != tt.in {
				t.Errorf("ParseHash(%q).String() = %q, want round trip", tt.in, h.String())
			}
		})
	}
}

func TestVerifyingReader(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("wormvault"), 10000)
	good := Sum(data)

	got, err := io.ReadAll(NewVerifyingReader(bytes.NewReader(data), good))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("good content: err = %v, equal = %v", err, bytes.Equal(got, data))
	}

	bad := append(bytes.Clone(data[:len(data)-1]), 'X')
	_, err = io.ReadAll(NewVerifyingReader(bytes.NewReader(bad), good))
	if !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("corrupt content: err = %v, want ErrHashMismatch", err)
	}
}

func TestTextRoundTrip(t *testing.T) {
	t.Parallel()
	h := Sum([]byte("x"))
	b, _ := h.MarshalText()
	var back Hash
	if err := back.UnmarshalText(b); err != nil || back != h {
		t.Fatalf("round trip: got %v, %v; want %v", back, err, h)
	}
	if err := back.UnmarshalText([]byte("nope")); err == nil {
		t.Fatal("UnmarshalText accepted a bad hash")
	}
}
