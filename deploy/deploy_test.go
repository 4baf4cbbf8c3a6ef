package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Roles are the cohort subcommands a deployed container may run.
var roles = []string{"coordinator", "paramserver", "worker"}

// cohortFlags reads the flag names each role defines from cmd/cohort's source, so the
// deployment files cannot drift from the binary: "coordinator" from
// newCoordinatorCmd, "agent" (worker and paramserver) from (*nodeAgentFlags).register,
// "global" from newRootCmd.
func cohortFlags(t *testing.T) map[string]map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "cmd", "cohort", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("cmd/cohort sources: %v (%d files)", err, len(files))
	}
	out := map[string]map[string]bool{"coordinator": {}, "agent": {}, "global": {}}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			var group string
			switch {
			case fn.Recv == nil && fn.Name.Name == "newCoordinatorCmd":
				group = "coordinator"
			case fn.Recv == nil && fn.Name.Name == "newRootCmd":
				group = "global"
			case fn.Recv != nil && fn.Name.Name == "register" && recvName(fn) == "nodeAgentFlags":
				group = "agent"
			default:
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				name := 1 // fl.BoolVar(&v, "name", ...)
				switch {
				case strings.HasSuffix(sel.Sel.Name, "Var") || strings.HasSuffix(sel.Sel.Name, "VarP"):
				case sel.Sel.Name == "Bool" || sel.Sel.Name == "String": // fl.Bool("name", ...), read with GetBool
					name = 0
				default:
					return true
				}
				if lit, ok := call.Args[name].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						out[group][s] = true
					}
				}
				return true
			})
		}
	}
	for group, flags := range out {
		if len(flags) == 0 {
			t.Fatalf("found no %s flags in cmd/cohort: was the function defining them renamed? (update cohortFlags)", group)
		}
	}
	return out
}

func recvName(fn *ast.FuncDecl) string {
	if len(fn.Recv.List) == 0 {
		return ""
	}
	typ := fn.Recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// boolFlags may appear without "=value".
var boolFlags = map[string]bool{"bootstrap": true, "insecure": true, "https": true}

// invocation is one parsed `cohort ROLE --flag=value ...` command line.
type invocation struct {
	role  string
	flags map[string]string
}

func (inv invocation) has(flag string) bool { _, ok := inv.flags[flag]; return ok }

// parseInvocation checks that args (after the binary) name a known role and only flags
// that role defines, each written --name=value (bool flags: --name), at most once.
// Arguments that are environment references ($VAR, "$VAR") are skipped.
func parseInvocation(known map[string]map[string]bool, args []string) (invocation, error) {
	if len(args) == 0 {
		return invocation{}, errors.New("no subcommand")
	}
	inv := invocation{role: args[0], flags: map[string]string{}}
	if !slices.Contains(roles, inv.role) {
		return inv, fmt.Errorf("subcommand %q is not one of %v", inv.role, roles)
	}
	group := "agent"
	if inv.role == "coordinator" {
		group = "coordinator"
	}
	for _, a := range args[1:] {
		if strings.HasPrefix(strings.Trim(a, `"`), "$") {
			continue
		}
		if !strings.HasPrefix(a, "--") {
			return inv, fmt.Errorf("%s: argument %q is not a --flag", inv.role, a)
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !known[group][name] && !known["global"][name] {
			return inv, fmt.Errorf("%s: flag --%s is not defined by `cohort %s`", inv.role, name, inv.role)
		}
		if !hasValue && !boolFlags[name] {
			return inv, fmt.Errorf("%s: write --%s=VALUE", inv.role, name)
		}
		if _, dup := inv.flags[name]; dup {
			return inv, fmt.Errorf("%s: flag --%s given twice", inv.role, name)
		}
		inv.flags[name] = strings.Trim(value, `"`)
	}
	if inv.role == "worker" && inv.has("data-addr") {
		return inv, errors.New("worker: --data-addr is a paramserver flag")
	}
	return inv, nil
}

// splitList splits a comma-separated flag value.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ---- docker-compose ----

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
	Volumes    map[string]any `yaml:"volumes"`
	Extensions map[string]any `yaml:",inline"`
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           map[string]string `yaml:"build"`
	Restart         string            `yaml:"restart"`
	Init            bool              `yaml:"init"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	Hostname        string            `yaml:"hostname"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Volumes         []string          `yaml:"volumes"`
	Networks        yaml.Node         `yaml:"networks"`
	Ports           []string          `yaml:"ports"`
	Profiles        []string          `yaml:"profiles"`
	Healthcheck     *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// ipv4 returns the service's fixed address on network, if any.
func (s composeService) ipv4(network string) string {
	if s.Networks.Kind != yaml.MappingNode {
		return ""
	}
	var m map[string]struct {
		IPv4 string `yaml:"ipv4_address"`
	}
	if err := s.Networks.Decode(&m); err != nil {
		return ""
	}
	return m[network].IPv4
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true) // a misspelt key is an error, not a silently ignored setting
	var c composeFile
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

const composeImage = "${COHORT_IMAGE:-cohort:dev}"

func TestCompose(t *testing.T) {
	known := cohortFlags(t)
	c := loadCompose(t)
	for k := range c.Extensions {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("top-level key %q: not a compose key nor an x- extension", k)
		}
	}
	if len(c.Services) == 0 {
		t.Fatal("no services")
	}

	byRole := map[string][]string{}
	invs := map[string]invocation{}
	for name, s := range c.Services {
		t.Run(name, func(t *testing.T) {
			for _, v := range s.Volumes {
				src, _, _ := strings.Cut(v, ":")
				if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
					if _, ok := c.Volumes[src]; !ok {
						t.Errorf("volume %q is not declared under volumes:", src)
					}
				}
			}
			for dep := range s.DependsOn {
				if _, ok := c.Services[dep]; !ok {
					t.Errorf("depends_on %q: no such service", dep)
				}
			}
			if s.Image != composeImage {
				if !strings.HasPrefix(s.Image, "versity/versitygw:") {
					t.Errorf("image %q: want the cohort image %s (or versitygw for S3)", s.Image, composeImage)
				}
				if s.Healthcheck == nil || !slices.ContainsFunc(s.Healthcheck.Test, func(a string) bool { return strings.HasSuffix(a, "/healthz") }) {
					t.Error("the S3 server needs a healthcheck on /healthz")
				}
				return
			}
			if s.Build["dockerfile"] != "deploy/Dockerfile" || s.Build["context"] != ".." {
				t.Errorf("build = %v, want context .. and dockerfile deploy/Dockerfile", s.Build)
			}
			if slices.Contains(s.Profiles, "tools") {
				return // the CLI service: `job ...`, run on demand
			}
			inv, err := parseInvocation(known, s.Command)
			if err != nil {
				t.Fatal(err)
			}
			invs[name] = inv
			byRole[inv.role] = append(byRole[inv.role], name)
			if inv.flags["node-id"] != name || s.Hostname != name {
				t.Errorf("--node-id %q and hostname %q: want both to be the service name", inv.flags["node-id"], s.Hostname)
			}
			if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD" || s.Healthcheck.Test[1] != "/usr/local/bin/healthcheck" {
				t.Fatalf("healthcheck = %+v, want [CMD /usr/local/bin/healthcheck URL] (the image has no shell)", s.Healthcheck)
			}
			_, port, err := net.SplitHostPort(inv.flags["http-addr"])
			if err != nil {
				t.Fatalf("--http-addr %q: %v", inv.flags["http-addr"], err)
			}
			path := "/readyz" // node agents: registered with the coordinators
			if inv.role == "coordinator" {
				path = "/healthz"
			}
			// The HTTP port is off loopback, so it is TLS (--https; plaintext is refused
			// at start), and the probe trusts the node's CA.
			if !inv.has("https") {
				t.Errorf("--http-addr %q without --https: the node refuses a plaintext HTTP port off loopback", inv.flags["http-addr"])
			}
			tlsDir := inv.flags["tls-dir"]
			if inv.role == "coordinator" {
				tlsDir = inv.flags["data-dir"] + "/tls"
			}
			want := []string{"CMD", "/usr/local/bin/healthcheck", "--ca", tlsDir + "/ca.crt", "https://127.0.0.1:" + port + path}
			if !slices.Equal(s.Healthcheck.Test, want) {
				t.Errorf("healthcheck %q, want %q", s.Healthcheck.Test, want)
			}
			// Advertised addresses must be reachable by the other containers.
			for _, f := range []string{"grpc-addr", "raft-addr", "data-addr"} {
				if v, ok := inv.flags[f]; ok {
					host, _, err := net.SplitHostPort(v)
					if err != nil || host != name {
						t.Errorf("--%s %q: want %s:PORT (others dial this address)", f, v, name)
					}
				}
			}
			if inv.role != "coordinator" {
				if inv.flags["storage-dir"] != "/var/lib/cohort/storage" || !slices.Contains(s.Volumes, "storage:/var/lib/cohort/storage") {
					t.Errorf("--storage-dir %q, volumes %v: node agents share the storage volume at /var/lib/cohort/storage", inv.flags["storage-dir"], s.Volumes)
				}
			}
		})
	}
	if len(byRole["coordinator"]) != 3 || len(byRole["paramserver"]) != 2 || len(byRole["worker"]) != 2 {
		t.Fatalf("services by role = %v, want 3 coordinators, 2 paramservers, 2 workers", byRole)
	}

	t.Run("coordinators", func(t *testing.T) {
		grpc := map[string]bool{}
		var bootstrap []string
		ips := map[string]string{}
		for _, name := range byRole["coordinator"] {
			inv := invs[name]
			grpc[inv.flags["grpc-addr"]] = true
			if inv.has("bootstrap") {
				bootstrap = append(bootstrap, name)
			}
			if inv.has("bootstrap") == inv.has("join") {
				t.Errorf("%s: want exactly one of --bootstrap and --join", name)
			}
			dir := inv.flags["data-dir"]
			if !slices.Contains(c.Services[name].Volumes, name+"-data:"+dir) {
				t.Errorf("%s: --data-dir %s is not its own named volume %s-data", name, dir, name)
			}
			ip := c.Services[name].ipv4("cohort")
			if ip == "" {
				t.Errorf("%s: no fixed ipv4_address (Raft records peers by IP)", name)
			} else if other, dup := ips[ip]; dup {
				t.Errorf("%s and %s share %s", name, other, ip)
			}
			ips[ip] = name
		}
		if len(bootstrap) != 1 {
			t.Fatalf("coordinators with --bootstrap: %v, want exactly one", bootstrap)
		}
		for _, name := range byRole["coordinator"] {
			inv := invs[name]
			for _, a := range splitList(inv.flags["join"]) {
				if !grpc[a] || a == inv.flags["grpc-addr"] {
					t.Errorf("%s: --join %s is not another coordinator's --grpc-addr", name, a)
				}
			}
			if inv.has("join") {
				if cond := c.Services[name].DependsOn[bootstrap[0]].Condition; cond != "service_healthy" {
					t.Errorf("%s: depends_on %s condition %q, want service_healthy", name, bootstrap[0], cond)
				}
			}
		}
		nets := c.Networks["cohort"].IPAM.Config
		if len(nets) != 1 {
			t.Fatalf("network cohort: want one subnet, got %d", len(nets))
		}
		_, subnet, err := net.ParseCIDR(nets[0].Subnet)
		if err != nil {
			t.Fatal(err)
		}
		for ip, name := range ips {
			if !subnet.Contains(net.ParseIP(ip)) {
				t.Errorf("%s: %s is outside the cohort subnet %s", name, ip, subnet)
			}
		}
		for _, role := range []string{"paramserver", "worker"} {
			for _, name := range byRole[role] {
				got := splitList(invs[name].flags["join"])
				var want []string
				for a := range grpc {
					want = append(want, a)
				}
				sort.Strings(got)
				sort.Strings(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s: --join %v, want every coordinator %v", name, got, want)
				}
			}
		}
	})
}

// ---- Kubernetes ----

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"` // ConfigMap
	Spec struct {
		// Service
		ClusterIP                string           `yaml:"clusterIP"`
		PublishNotReadyAddresses bool             `yaml:"publishNotReadyAddresses"`
		Selector                 yaml.Node        `yaml:"selector"` // Service: map; workloads, PDB: {matchLabels}
		Ports                    []k8sServicePort `yaml:"ports"`
		MinAvailable             *int             `yaml:"minAvailable"` // PodDisruptionBudget
		Replicas                 *int             `yaml:"replicas"`
		ServiceName              string           `yaml:"serviceName"`
		PodManagementPolicy      string           `yaml:"podManagementPolicy"`
		Template                 *k8sPodTemplate  `yaml:"template"`
		VolumeClaimTemplates     []k8sObject      `yaml:"volumeClaimTemplates"`
		AccessModes              []string         `yaml:"accessModes"` // PersistentVolumeClaim
	} `yaml:"spec"`
	// Kustomization
	Resources []string `yaml:"resources"`
}

type k8sServicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"`
}

type k8sPodTemplate struct {
	Metadata struct {
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		InitContainers []k8sContainer `yaml:"initContainers"`
		Containers     []k8sContainer `yaml:"containers"`
		Volumes        []struct {
			Name string `yaml:"name"`
			PVC  *struct {
				ClaimName string `yaml:"claimName"`
			} `yaml:"persistentVolumeClaim"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	EnvFrom []struct {
		ConfigMapRef struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name string `yaml:"name"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path   string `yaml:"path"`
		Port   string `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port string `yaml:"port"`
	} `yaml:"tcpSocket"`
}

func (c k8sContainer) portNamed(name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func (c k8sContainer) mountedAt(path string) string {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m.Name
		}
	}
	return ""
}

// labels decodes a selector: a plain map (Service) or {matchLabels: map}.
func labels(n yaml.Node) map[string]string {
	var m struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	if n.Decode(&m) == nil && m.MatchLabels != nil {
		return m.MatchLabels
	}
	var plain map[string]string
	_ = n.Decode(&plain)
	return plain
}

// selects reports whether every selector label is among labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

const k8sDir = "kubernetes"

// intp formats an optional integer field.
func intp(p *int) string {
	if p == nil {
		return "unset"
	}
	return strconv.Itoa(*p)
}

// loadManifests parses every document of every YAML file in kubernetes/.
func loadManifests(t *testing.T) (map[string][]k8sObject, k8sObject) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	out := map[string][]k8sObject{}
	var kust k8sObject
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for i := 0; ; i++ {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			if o.Kind == "Kustomization" {
				kust = o
				continue
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: document %d: want apiVersion, kind and metadata.name, got %q %q %q", f, i, o.APIVersion, o.Kind, o.Metadata.Name)
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], o)
		}
	}
	return out, kust
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

const cohortImageRepo = "ghcr.io/cohort-dev/cohort"

// coordinatorScript extracts the cohort command line from the coordinator's shim
// script ("exec /usr/local/bin/cohort coordinator \ ..."), dropping shell quoting.
func coordinatorScript(t *testing.T, script string) []string {
	t.Helper()
	_, after, ok := strings.Cut(script, "exec /usr/local/bin/cohort ")
	if !ok {
		t.Fatal("coordinator script: no `exec /usr/local/bin/cohort ...` line")
	}
	after = strings.ReplaceAll(after, "\\\n", " ")
	line, _, _ := strings.Cut(after, "\n")
	var args []string
	for _, f := range strings.Fields(line) {
		args = append(args, strings.ReplaceAll(f, `"`, ""))
	}
	return args
}

func TestKubernetes(t *testing.T) {
	known := cohortFlags(t)
	byFile, kust := loadManifests(t)

	t.Run("kustomization", func(t *testing.T) {
		var files []string
		for f := range byFile {
			files = append(files, f)
		}
		sort.Strings(files)
		listed := slices.Clone(kust.Resources)
		sort.Strings(listed)
		if !slices.Equal(files, listed) {
			t.Errorf("kustomization resources %v, want every manifest %v", listed, files)
		}
	})

	var objs []k8sObject
	for _, f := range byFile {
		objs = append(objs, f...)
	}
	find := func(kind, name string) *k8sObject {
		for i := range objs {
			if objs[i].Kind == kind && objs[i].Metadata.Name == name {
				return &objs[i]
			}
		}
		return nil
	}
	var config *k8sObject
	for i := range objs {
		if objs[i].Kind == "ConfigMap" {
			config = &objs[i]
		}
	}
	if config == nil {
		t.Fatal("no ConfigMap for the common flags")
	}

	roleWorkloads := map[string]*k8sObject{}
	for i := range objs {
		o := &objs[i]
		if o.Kind != "StatefulSet" && o.Kind != "Deployment" {
			continue
		}
		t.Run(o.Kind+"/"+o.Metadata.Name, func(t *testing.T) {
			tpl := o.Spec.Template
			if tpl == nil || len(tpl.Spec.Containers) != 1 {
				t.Fatal("want a pod template with one container")
			}
			if !selects(labels(o.Spec.Selector), tpl.Metadata.Labels) {
				t.Errorf("selector %v does not match the pod labels %v", labels(o.Spec.Selector), tpl.Metadata.Labels)
			}
			for _, ic := range tpl.Spec.InitContainers {
				if !strings.HasPrefix(ic.Image, "busybox:") {
					t.Errorf("init container %s: image %q, want busybox (the shell shim)", ic.Name, ic.Image)
				}
			}
			c := tpl.Spec.Containers[0]
			repo, tag, _ := strings.Cut(c.Image, ":")
			if repo != cohortImageRepo || tag == "" {
				t.Errorf("container %s: image %q, want %s:TAG", c.Name, c.Image, cohortImageRepo)
			}
			args := c.Args
			if len(c.Command) > 0 {
				if len(c.Command) != 4 || c.Command[0] != "/shim/busybox" || c.Command[1] != "sh" || c.Command[2] != "-c" {
					t.Fatalf("command %v: only the coordinator's busybox shim replaces the entrypoint", c.Command)
				}
				args = coordinatorScript(t, c.Command[3])
			}
			inv, err := parseInvocation(known, args)
			if err != nil {
				t.Fatal(err)
			}
			if roleWorkloads[inv.role] != nil {
				t.Errorf("second workload for role %s", inv.role)
			}
			roleWorkloads[inv.role] = o
			if inv.role != c.Name {
				t.Errorf("container %q runs `cohort %s`: name it after its role", c.Name, inv.role)
			}

			// Every $(VAR) is defined by env or the ConfigMap.
			defined := map[string]bool{}
			for _, e := range c.Env {
				defined[e.Name] = true
			}
			for _, ef := range c.EnvFrom {
				cm := find("ConfigMap", ef.ConfigMapRef.Name)
				if cm == nil {
					t.Fatalf("envFrom ConfigMap %q does not exist", ef.ConfigMapRef.Name)
				}
				for k := range cm.Data {
					defined[k] = true
				}
			}
			for _, a := range c.Args {
				for _, m := range envRef.FindAllStringSubmatch(a, -1) {
					if !defined[m[1]] {
						t.Errorf("arg %q: $(%s) is neither in env nor in the ConfigMap", a, m[1])
					}
				}
			}

			// Prometheus scraping.
			ann := tpl.Metadata.Annotations
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" {
				t.Errorf("annotations %v: want prometheus.io/scrape \"true\" and path /metrics", ann)
			}
			_, httpPort, _ := net.SplitHostPort(inv.flags["http-addr"])
			if c.portNamed("http") == 0 || strconv.Itoa(c.portNamed("http")) != httpPort || ann["prometheus.io/port"] != httpPort {
				t.Errorf("--http-addr %q, port http %d, prometheus.io/port %q: want them equal", inv.flags["http-addr"], c.portNamed("http"), ann["prometheus.io/port"])
			}
			// The HTTP port is TLS (--https): probes and scrapes speak HTTPS.
			if !inv.has("https") {
				t.Errorf("--http-addr %q without --https: the node refuses a plaintext HTTP port off loopback", inv.flags["http-addr"])
			}
			if ann["prometheus.io/scheme"] != "https" {
				t.Errorf("annotation prometheus.io/scheme %q: want https (the HTTP port is TLS)", ann["prometheus.io/scheme"])
			}
			for _, p := range []*k8sProbe{c.ReadinessProbe, c.LivenessProbe} {
				if p == nil {
					continue
				}
				if p.HTTPGet != nil && p.HTTPGet.Scheme != "HTTPS" {
					t.Errorf("probe httpGet %s: scheme %q, want HTTPS (the HTTP port is TLS)", p.HTTPGet.Path, p.HTTPGet.Scheme)
				}
				port := ""
				if p.HTTPGet != nil {
					port = p.HTTPGet.Port
				} else if p.TCPSocket != nil {
					port = p.TCPSocket.Port
				}
				if c.portNamed(port) == 0 {
					t.Errorf("probe port %q is not a named container port", port)
				}
			}
			if c.LivenessProbe == nil {
				t.Error("no liveness probe")
			}
			// Node agents: ready once registered, alive while the process runs.
			if inv.role != "coordinator" {
				if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
					t.Error("node agent readiness probe: want httpGet /readyz")
				}
				if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
					t.Error("node agent liveness probe: want httpGet /healthz")
				}
			}

			// Volumes: claims exist, storage is where the flags say.
			for _, v := range tpl.Spec.Volumes {
				if v.PVC != nil && find("PersistentVolumeClaim", v.PVC.ClaimName) == nil {
					t.Errorf("volume %s: PersistentVolumeClaim %q does not exist", v.Name, v.PVC.ClaimName)
				}
			}
			if inv.role != "coordinator" {
				dir := inv.flags["storage-dir"]
				if m := envRef.FindStringSubmatch(dir); m != nil {
					dir = config.Data[m[1]]
				}
				if c.mountedAt(dir) == "" {
					t.Errorf("--storage-dir %q: no volume mounted there", dir)
				}
				if !strings.Contains(inv.flags["join"], "$(") && inv.flags["join"] == "" {
					t.Error("no --join")
				}
			}
		})
	}
	for _, role := range roles {
		if roleWorkloads[role] == nil {
			t.Fatalf("no workload runs `cohort %s`", role)
		}
	}

	t.Run("coordinators", func(t *testing.T) {
		sts := roleWorkloads["coordinator"]
		if sts.Kind != "StatefulSet" {
			t.Fatalf("coordinators run as a %s, want a StatefulSet", sts.Kind)
		}
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
			t.Errorf("replicas = %s, want 3", intp(sts.Spec.Replicas))
		}
		replicas := 3
		if sts.Spec.Replicas != nil {
			replicas = *sts.Spec.Replicas
		}
		if sts.Spec.PodManagementPolicy != "Parallel" {
			t.Errorf("podManagementPolicy %q, want Parallel (a restarted cluster needs all voters for a quorum)", sts.Spec.PodManagementPolicy)
		}
		if len(sts.Spec.VolumeClaimTemplates) != 1 {
			t.Fatalf("volumeClaimTemplates: %d, want 1", len(sts.Spec.VolumeClaimTemplates))
		}
		c := sts.Spec.Template.Spec.Containers[0]
		inv, _ := parseInvocation(known, coordinatorScript(t, c.Command[3]))
		if got, want := c.mountedAt(inv.flags["data-dir"]), sts.Spec.VolumeClaimTemplates[0].Metadata.Name; got != want {
			t.Errorf("--data-dir %s holds volume %q, want the claim template %q", inv.flags["data-dir"], got, want)
		}
		if inv.flags["node-id"] != "$POD_NAME" {
			t.Errorf("--node-id %q, want the pod name (stable per ordinal)", inv.flags["node-id"])
		}
		for _, f := range []string{"raft-addr", "grpc-addr"} {
			if !strings.HasPrefix(inv.flags[f], "$POD_IP:") {
				t.Errorf("--%s %q: want $POD_IP:PORT (the address peers dial)", f, inv.flags[f])
			}
		}

		// Bootstrap on ordinal 0, join the peers otherwise, derived from the ConfigMap.
		script := c.Command[3]
		for _, want := range []string{`ordinal="${POD_NAME##*-}"`, `if [ "$ordinal" = 0 ]; then`, `cluster="--bootstrap"`, `cluster="--join=$peers"`, `"$cluster"`,
			`cohort-coordinator-$i.$COHORT_PEERS_SERVICE:7070`} {
			if !strings.Contains(script, want) {
				t.Errorf("coordinator script lacks %q", want)
			}
		}
		if got := config.Data["COHORT_COORDINATORS"]; got != strconv.Itoa(replicas) {
			t.Errorf("ConfigMap COHORT_COORDINATORS %q, want the StatefulSet's replicas %d", got, replicas)
		}
		if config.Data["COHORT_PEERS_SERVICE"] != sts.Spec.ServiceName {
			t.Errorf("ConfigMap COHORT_PEERS_SERVICE %q, want the StatefulSet's serviceName %q", config.Data["COHORT_PEERS_SERVICE"], sts.Spec.ServiceName)
		}
		if !strings.HasPrefix(sts.Metadata.Name+"-", "cohort-coordinator-") {
			t.Errorf("StatefulSet %q: the script assumes pods named cohort-coordinator-N", sts.Metadata.Name)
		}
		_, grpcPort, _ := net.SplitHostPort(strings.ReplaceAll(inv.flags["grpc-addr"], "$POD_IP", "x"))
		if c.portNamed("grpc") == 0 || strconv.Itoa(c.portNamed("grpc")) != grpcPort {
			t.Errorf("--grpc-addr port %s, container port grpc %d: want equal", grpcPort, c.portNamed("grpc"))
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
			t.Error("coordinator readiness probe: want httpGet /healthz")
		}

		headless := find("Service", sts.Spec.ServiceName)
		if headless == nil || headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
			t.Fatalf("serviceName %q: want a headless Service with publishNotReadyAddresses", sts.Spec.ServiceName)
		}
		pods := sts.Spec.Template.Metadata.Labels
		for _, o := range objs {
			switch o.Kind {
			case "Service":
				if !selects(labels(o.Spec.Selector), pods) {
					continue
				}
				for _, p := range o.Spec.Ports {
					if c.portNamed(p.TargetPort) != p.Port {
						t.Errorf("Service %s port %s: targetPort %q is not container port %d", o.Metadata.Name, p.Name, p.TargetPort, p.Port)
					}
				}
			case "PodDisruptionBudget":
				if !selects(labels(o.Spec.Selector), pods) {
					t.Errorf("PodDisruptionBudget %s does not select the coordinators", o.Metadata.Name)
				} else if o.Spec.MinAvailable == nil || *o.Spec.MinAvailable != replicas/2+1 {
					t.Errorf("PodDisruptionBudget minAvailable %s, want a quorum (%d)", intp(o.Spec.MinAvailable), replicas/2+1)
				}
			}
		}
		client := find("Service", strings.Split(config.Data["COHORT_JOIN"], ":")[0])
		if client == nil || client.Spec.ClusterIP == "None" || !selects(labels(client.Spec.Selector), pods) {
			t.Errorf("COHORT_JOIN %q: want a ClusterIP Service selecting the coordinators", config.Data["COHORT_JOIN"])
		}
		if find("PodDisruptionBudget", sts.Metadata.Name) == nil {
			t.Error("no PodDisruptionBudget for the coordinators")
		}
		// ACLs: the optional Secret's tokens file becomes --acl-tokens-file.
		if !strings.Contains(script, `acl="--acl-tokens-file=/etc/cohort/acl/tokens.yaml"`) || !known["coordinator"]["acl-tokens-file"] {
			t.Error("coordinator script: want acl=\"--acl-tokens-file=/etc/cohort/acl/tokens.yaml\" (a flag of `cohort coordinator`) when the cohort-acl Secret is mounted")
		}
		if c.mountedAt("/etc/cohort/acl") == "" {
			t.Error("coordinator: the cohort-acl Secret is not mounted at /etc/cohort/acl")
		}
	})

	t.Run("storage", func(t *testing.T) {
		for _, role := range []string{"paramserver", "worker"} {
			for _, v := range roleWorkloads[role].Spec.Template.Spec.Volumes {
				if v.PVC == nil {
					continue
				}
				pvc := find("PersistentVolumeClaim", v.PVC.ClaimName)
				if pvc != nil && !slices.Contains(pvc.Spec.AccessModes, "ReadWriteMany") {
					t.Errorf("%s: claim %s is shared by node agents on many nodes: want ReadWriteMany", role, pvc.Metadata.Name)
				}
			}
		}
	})
}

// ---- systemd ----

// unitVar matches ${NAME} and $NAME in a unit's command line.
var unitVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func TestSystemdUnits(t *testing.T) {
	known := cohortFlags(t)
	for _, role := range roles {
		t.Run(role, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("systemd", "cohort-"+role+".service"))
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(raw), "\\\n", " ")
			keys := map[string][]string{}
			for _, line := range strings.Split(text, "\n") {
				line = strings.TrimSpace(line)
				if line == "" || line[0] == '#' || line[0] == '[' {
					continue
				}
				k, v, ok := strings.Cut(line, "=")
				if !ok {
					t.Fatalf("line %q: not KEY=VALUE", line)
				}
				keys[k] = append(keys[k], v)
			}
			exec := strings.Fields(strings.Join(keys["ExecStart"], " "))
			if len(exec) < 2 || exec[0] != "/usr/local/bin/cohort" {
				t.Fatalf("ExecStart %v: want /usr/local/bin/cohort %s ...", exec, role)
			}
			inv, err := parseInvocation(known, exec[1:])
			if err != nil {
				t.Fatal(err)
			}
			if inv.role != role {
				t.Errorf("cohort-%s.service runs `cohort %s`", role, inv.role)
			}
			for _, want := range []string{"ProtectSystem=strict", "Restart=on-failure", "NoNewPrivileges=yes", "RestartPreventExitStatus=2"} {
				k, v, _ := strings.Cut(want, "=")
				if !slices.Contains(keys[k], v) {
					t.Errorf("want %s", want)
				}
			}
			if len(keys["StateDirectory"]) == 0 || (len(keys["User"]) == 0 && !slices.Contains(keys["DynamicUser"], "yes")) {
				t.Error("want StateDirectory and User (or DynamicUser=yes)")
			}
			dirFlag := "storage-dir"
			if role == "coordinator" {
				dirFlag = "data-dir"
			}
			if want := "%S/" + keys["StateDirectory"][0]; inv.flags[dirFlag] != want {
				t.Errorf("--%s %q, want the StateDirectory %q (writable under ProtectSystem=strict)", dirFlag, inv.flags[dirFlag], want)
			}
			// Every variable ExecStart uses is set by an example environment file.
			defined := map[string]bool{}
			for _, ef := range keys["EnvironmentFile"] {
				example := filepath.Join("systemd", filepath.Base(strings.TrimPrefix(ef, "-"))+".example")
				raw, err := os.ReadFile(example)
				if err != nil {
					t.Errorf("EnvironmentFile %s: no %s to copy it from", ef, example)
					continue
				}
				for _, line := range strings.Split(string(raw), "\n") {
					if k, _, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
						defined[k] = true
					}
				}
			}
			for _, m := range unitVar.FindAllStringSubmatch(strings.Join(keys["ExecStart"], " "), -1) {
				if name := m[1] + m[2]; !defined[name] {
					t.Errorf("ExecStart uses $%s, which no example environment file sets", name)
				}
			}
		})
	}
}
