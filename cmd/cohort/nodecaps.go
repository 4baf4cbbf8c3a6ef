package main

import (
	"fmt"
	"regexp"
	"strings"
)

// labelKey and labelValue follow Kubernetes' label syntax: an optional DNS-subdomain
// prefix and a name of at most 63 characters; values of at most 63 characters.
var (
	labelName  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)
	labelValue = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$`)
	dnsPrefix  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)
)

// parseLabels parses repeated --label KEY=VALUE flags into the node's labels (the ones
// spec.placement.nodeSelector matches). A malformed pair or a key given twice with
// different values is an error naming the flag and the pair.
func parseLabels(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE", p)
		}
		if err := checkLabelKey(k); err != nil {
			return nil, fmt.Errorf("--label %q: %w", p, err)
		}
		if !labelValue.MatchString(v) {
			return nil, fmt.Errorf("--label %q: value must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", p)
		}
		if old, dup := out[k]; dup && old != v {
			return nil, fmt.Errorf("--label %q: key %q already set to %q", p, k, old)
		}
		out[k] = v
	}
	return out, nil
}

func checkLabelKey(k string) error {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if len(prefix) > 253 || !dnsPrefix.MatchString(prefix) {
			return fmt.Errorf("key prefix %q must be a DNS subdomain (lower-case, at most 253 characters)", prefix)
		}
		name = rest
	}
	if !labelName.MatchString(name) {
		return fmt.Errorf("key %q: name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k)
	}
	return nil
}
