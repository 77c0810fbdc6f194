package config

import (
	"errors"
	"fmt"
	"maps"
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
func parseNames(p *problems, raw string) []string {
	name := Prefix + "_CREDENTIALS"
	if strings.TrimSpace(raw) == "" {
		p.errorf(name, "not set; list the credentials to keep fresh, separated by commas, e.g. firework,ingest-main")
		return nil
	}
	var names []string
	byPrefix := map[string]string{}
	for i, n := range strings.Split(raw, ",") {
		n = strings.TrimSpace(n)
		var ne *broker.NameError
		switch err := broker.CheckName(n); {
		case n == "":
			p.errorf(name, "entry %d is empty; remove the extra comma", i+1)
		case errors.As(err, &ne):
			p.errorf(name, "name %s %s", sources.QuoteValue(n), ne.Problem)
		case slices.Contains(names, n):
			p.errorf(name, "%s is listed twice; list each credential once", n)
		case globalClash(n) != "":
			p.errorf(name, "%s would read %s, a global setting, as its own; rename it", n, globalClash(n))
		case byPrefix[CredentialPrefix(n)] != "":
			p.errorf(name, "%s and %s both read the variables %s_*; rename one", byPrefix[CredentialPrefix(n)], n, CredentialPrefix(n))
		default:
			byPrefix[CredentialPrefix(n)] = n
			names = append(names, n)
		}
	}
	return names
}

// globalClash is a global variable that credential n's settings would
// also read (credential redis: TOKENBROKER_REDIS_PASSWORD), or "".
func globalClash(n string) string {
	for _, s := range credSettings {
		if v := CredentialPrefix(n) + "_" + s; slices.Contains(globalSettings, v[len(Prefix)+1:]) {
			return v
		}
	}
	return ""
}

// scan reports TOKENBROKER_ variables that nothing reads: an unknown
// setting of a listed credential is an error (a typo loses a setting);
// a variable of an unlisted credential, or an unknown one, is a warning.
// It accepts exactly the names the settings structs declare.
func scan(p *problems, env map[string]string, names []string) {
	byPrefix := make(map[string]string, len(names)) // TOKENBROKER_<NAME> -> name
	for _, n := range names {
		byPrefix[CredentialPrefix(n)] = n
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		rest, ok := strings.CutPrefix(k, Prefix+"_")
		if !ok || slices.Contains(globalSettings, rest) {
			continue
		}
		var claims []string // in the order of names
		for _, n := range names {
			if setting, ok := strings.CutPrefix(k, CredentialPrefix(n)+"_"); ok && slices.Contains(credSettings, setting) {
				claims = append(claims, n)
			}
		}
		switch owner := longestOwner(k, byPrefix); {
		case len(claims) > 1:
			p.errorf(k, "is a setting of both credentials %s and %s; rename one of them", claims[0], claims[1])
		case len(claims) == 1:
		case owner != "":
			p.errorf(k, "%s", unknownSetting(owner, k[len(CredentialPrefix(owner))+1:]))
		default:
			p.warnf(k, "%s", strayVariable(rest, names))
		}
	}
}

// longestOwner is the listed credential with the longest prefix of k, or "".
func longestOwner(k string, byPrefix map[string]string) string {
	for i := len(k) - 1; i > len(Prefix); i-- {
		if n, ok := byPrefix[k[:i]]; ok && k[i] == '_' {
			return n
		}
	}
	return ""
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
		return fmt.Sprintf("credential %s has no such setting: only %s can be read from a file; set %s%s directly",
			name, strings.Join(files, ", "), pfx, base)
	}
	if s := closest(setting, credSettings); s != "" {
		return fmt.Sprintf("credential %s has no such setting; did you mean %s%s?", name, pfx, s)
	}
	return fmt.Sprintf("credential %s has no such setting; its settings are %s", name, strings.Join(credSettings, ", "))
}

// strayVariable explains a TOKENBROKER_ variable that no listed credential
// owns. rest is the name after TOKENBROKER_.
func strayVariable(rest string, names []string) string {
	var setting string // the longest credential setting rest ends with
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
	cred := rest[:len(rest)-len(setting)-1]
	msg := fmt.Sprintf("credential %s is not in %s_CREDENTIALS, so this is ignored; add it there, or remove the variable",
		strings.ToLower(cred), Prefix)
	upper := make([]string, len(names))
	for i, n := range names {
		upper[i] = CredentialPrefix(n)[len(Prefix)+1:]
	}
	if i := slices.Index(upper, closest(cred, upper)); i >= 0 {
		msg += fmt.Sprintf(" (did you mean %s_%s_%s, for %s?)", Prefix, upper[i], setting, names[i])
	}
	return msg
}

// closest returns the candidate that s most likely misspells, or "".
func closest(s string, candidates []string) string {
	norm := func(x string) string { return strings.ReplaceAll(strings.ToUpper(x), "_", "") }
	best, bestD := "", 3 // at most two edits
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
