package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// CredentialPrefix is TOKENBROKER_<NAME>, NAME upper-cased with - as _:
// the prefix envconfig reads a credential's settings under.
func CredentialPrefix(name string) string {
	return Prefix + "_" + strings.ReplaceAll(strings.ToUpper(name), "-", "_")
}

// parseNames reads TOKENBROKER_CREDENTIALS and returns the valid, distinct
// names in order. The name rule is the broker's.
func parseNames(p *problems, raw string) (names []string) {
	const name = Prefix + "_CREDENTIALS"
	if strings.TrimSpace(raw) == "" {
		p.errorf(name, "not set; list the credentials to keep fresh, separated by commas, e.g. firework,ingest-main")
		return nil
	}
	owner := map[string]string{} // TOKENBROKER_<NAME> -> name
	for i, n := range strings.Split(raw, ",") {
		n = strings.TrimSpace(n)
		pfx := CredentialPrefix(n)
		var ne *broker.NameError
		switch err := broker.CheckName(n); {
		case n == "":
			p.errorf(name, "entry %d is empty; remove the extra comma", i+1)
		case errors.As(err, &ne):
			p.errorf(name, "name %s %s", sources.QuoteValue(n), ne.Problem)
		case owner[pfx] == n:
			p.errorf(name, "%s is listed twice; list each credential once", n)
		case owner[pfx] != "":
			p.errorf(name, "%s and %s both read the variables %s_*; rename one", owner[pfx], n, pfx)
		case globalClash(pfx) != "":
			p.errorf(name, "%s would read %s, a global setting, as its own; rename it", n, globalClash(pfx))
		default:
			owner[pfx] = n
			names = append(names, n)
		}
	}
	return names
}

// globalClash is a global variable that the credential reading the
// variables pfx_* would also read (credential redis: TOKENBROKER_REDIS_PASSWORD).
func globalClash(pfx string) string {
	for _, s := range credSettings {
		if v := pfx + "_" + s; slices.Contains(globalSettings, v[len(Prefix)+1:]) {
			return v
		}
	}
	return ""
}

// scan reports the TOKENBROKER_ variables that nothing reads, by the names
// the settings structs declare: an unknown setting of a listed credential
// is an error (a typo loses a setting); any other, a warning.
func scan(p *problems, names []string) {
	var keys []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, Prefix+"_") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		if slices.Contains(globalSettings, k[len(Prefix)+1:]) {
			continue
		}
		var claims []string
		owner := "" // the listed credential with the longest prefix of k
		for _, n := range names {
			if s, ok := strings.CutPrefix(k, CredentialPrefix(n)+"_"); ok {
				if slices.Contains(credSettings, s) {
					claims = append(claims, n)
				}
				if len(n) > len(owner) {
					owner = n
				}
			}
		}
		switch {
		case len(claims) > 1:
			p.errorf(k, "is a setting of both credentials %s and %s; rename one of them", claims[0], claims[1])
		case len(claims) == 1:
		case owner != "":
			p.errorf(k, "%s", unknownSetting(owner, k[len(CredentialPrefix(owner))+1:]))
		default:
			p.warnf(k, "%s", strayVariable(k[len(Prefix)+1:], names))
		}
	}
}

func unknownSetting(name, setting string) string {
	pfx := CredentialPrefix(name) + "_"
	if base, ok := strings.CutSuffix(strings.ToUpper(setting), "_FILE"); ok && slices.Contains(credSettings, base) {
		var files []string
		for _, s := range credSettings {
			if f, ok := strings.CutSuffix(s, "_FILE"); ok && slices.Contains(credSettings, f) { // not TOKEN_FILE
				files = append(files, f)
			}
		}
		return fmt.Sprintf("credential %s has no such setting: only %s can be read from a file; set %s%s directly", name, strings.Join(files, ", "), pfx, base)
	}
	if s := closest(setting, credSettings); s != "" {
		return fmt.Sprintf("credential %s has no such setting; did you mean %s%s?", name, pfx, s)
	}
	return fmt.Sprintf("credential %s has no such setting; its settings are %s", name, strings.Join(credSettings, ", "))
}

// strayVariable explains a variable no listed credential owns; rest is the
// name after TOKENBROKER_.
func strayVariable(rest string, names []string) string {
	setting := "" // the longest credential setting rest ends with
	for _, s := range credSettings {
		if strings.HasSuffix(rest, "_"+s) && len(rest) > len(s)+1 && len(s) > len(setting) {
			setting = s
		}
	}
	if setting == "" {
		if s := closest(rest, globalSettings); s != "" {
			return fmt.Sprintf("tokenbroker has no such setting and ignores it; did you mean %s_%s?", Prefix, s)
		}
		return "tokenbroker has no such setting and ignores it; remove it"
	}
	cred := strings.TrimSuffix(rest, "_"+setting)
	msg := fmt.Sprintf("credential %s is not in %s_CREDENTIALS, so this is ignored; add it there, or remove the variable", strings.ToLower(cred), Prefix)
	for _, n := range names {
		if pfx := CredentialPrefix(n); closest(cred, []string{pfx[len(Prefix)+1:]}) != "" {
			return fmt.Sprintf("%s (did you mean %s_%s, for %s?)", msg, pfx, setting, n)
		}
	}
	return msg
}

// closest returns the candidate that s most likely misspells (the same but
// for case and underscores, or at most two edits away), or "".
func closest(s string, candidates []string) string {
	norm := func(x string) string { return strings.ReplaceAll(strings.ToUpper(x), "_", "") }
	best, bestD := "", 3
	for _, c := range candidates {
		if norm(c) == norm(s) {
			return c
		}
		if d := editDistance(strings.ToUpper(s), c); d < bestD && d < len(c)/2 {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, capped for long input.
func editDistance(a, b string) int {
	if len(a) > 100 || len(b) > 100 {
		return 100
	}
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
