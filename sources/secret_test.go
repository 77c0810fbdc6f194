package sources

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Every way Go prints a value must hide a Secret, including as an
// unexported field reached by reflection.
func TestSecretNeverPrints(t *testing.T) {
	const v = "s3cr3t-VALUE-xyz"
	s := NewSecret(v)
	type holder struct {
		Exported Secret
		hidden   Secret
		Ptr      *Secret
	}
	h := holder{s, s, &s}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "s", s, "h", h)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "s", s, "h", h)
	js, _ := json.Marshal(h)
	outs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", s, s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", h, h, h), fmt.Sprintf("%v", &h),
		fmt.Errorf("wrapped: %w", errors.New(s.String())).Error(),
		logs.String(), string(js), fmt.Sprint([]Secret{s}), fmt.Sprint(map[string]Secret{"k": s}),
	}
	for _, o := range outs {
		if strings.Contains(o, v) {
			t.Errorf("secret printed in %q", o)
		}
	}
	if s.Reveal() != v || !s.Equal(NewSecret(v)) || s.IsZero() || !NewSecret("").IsZero() {
		t.Error("Reveal/Equal/IsZero do not round-trip")
	}
}
