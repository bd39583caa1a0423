package main

// Signing with an admin's personal key: the statement comes from the
// vault, is shown to the human, and is signed locally; the private key
// never leaves this machine.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/client"
)

// signFlags are the flags of every signed admin command.
type signFlags struct {
	key    string
	sshKey string
	as     string
	yes    bool
}

func addSignFlags(fs *flag.FlagSet, getenv func(string) string) *signFlags {
	f := &signFlags{}
	fs.StringVar(&f.key, "key", getenv("VAULT_ADMIN_KEY"), "your admin private key `FILE`, from vault admin keygen (VAULT_ADMIN_KEY)")
	fs.StringVar(&f.sshKey, "ssh-key", getenv("VAULT_ADMIN_SSH_KEY"), "your ssh-ed25519 private key, signed with ssh-keygen -Y sign (VAULT_ADMIN_SSH_KEY)")
	fs.StringVar(&f.as, "as", getenv("VAULT_ADMIN_NAME"), "your admin name (default: found from your key in the admin set) (VAULT_ADMIN_NAME)")
	fs.BoolVar(&f.yes, "yes", false, "sign without asking for confirmation")
	return f
}

func (f *signFlags) check(cmd string) error {
	if (f.key == "") == (f.sshKey == "") {
		return fmt.Errorf("%s: give exactly one of --key or --ssh-key: approvals are signed with your own admin key", cmd)
	}
	return nil
}

// publicKey is the admin public key of the configured private key.
func (f *signFlags) publicKey() (approval.Key, error) {
	if f.key != "" {
		priv, err := approval.ReadPrivateKey(f.key)
		if err != nil {
			return approval.Key{}, err
		}
		return approval.PublicOf(priv), nil
	}
	b, err := os.ReadFile(f.sshKey + ".pub")
	if err != nil {
		return approval.Key{}, fmt.Errorf("read the public half of --ssh-key: %w", err)
	}
	return approval.ParsePublicKey(string(b))
}

// signer finds the admin name to sign as.
func (f *signFlags) signer(ctx context.Context, c *client.Client) (string, error) {
	if f.as != "" {
		return f.as, nil
	}
	pub, err := f.publicKey()
	if err != nil {
		return "", err
	}
	set, err := c.AdminSet(ctx)
	if err != nil {
		return "", err
	}
	for _, a := range set.Admins {
		if k, err := approval.ParsePublicKey(a.PublicKey); err == nil && k.Equal(pub) {
			return a.Name, nil
		}
	}
	return "", fmt.Errorf("your key %s is not in the vault's admin set (version %d)", pub.Fingerprint(), set.Version)
}

// sign signs the statement with the configured key.
func (f *signFlags) sign(ctx context.Context, statement []byte) (sig []byte, format string, err error) {
	if f.key != "" {
		priv, err := approval.ReadPrivateKey(f.key)
		if err != nil {
			return nil, "", err
		}
		return ed25519.Sign(priv, statement), approval.FormatRaw, nil
	}
	dir, err := os.MkdirTemp("", "vault-statement-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "statement")
	if err := os.WriteFile(file, statement, 0o600); err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, "ssh-keygen", "-Y", "sign", "-n", approval.Namespace, "-f", f.sshKey, file)
	cmd.Stdin = os.Stdin // a passphrase prompt, if any
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("ssh-keygen -Y sign: %w: %s", err, strings.TrimSpace(string(out)))
	}
	sig, err = os.ReadFile(file + ".sig")
	if err != nil {
		return nil, "", err
	}
	return sig, approval.FormatSSHSIG, nil
}

// signAction fetches the statement for action on d, shows it with what
// it covers, asks for confirmation on a terminal, and returns the
// signature to send.
func signAction(ctx context.Context, c *client.Client, f *signFlags, d client.Deletion, action, reason string,
	stdin io.Reader, stdout io.Writer) (client.Signature, error) {
	name, err := f.signer(ctx, c)
	if err != nil {
		return client.Signature{}, err
	}
	statement, err := c.Statement(ctx, d.ID, action, name)
	if err != nil {
		return client.Signature{}, err
	}
	fmt.Fprintf(stdout, "You are about to sign, as %s:\n\n%s\n", name, indent(string(statement), 20))
	if d.Affected != nil {
		fmt.Fprintf(stdout, "It covers %s and %s, %s (when requested).\n", plural(d.Affected.Chunks, "chunk"), plural(d.Affected.Snapshots, "snapshot"), humanBytes(d.Affected.Bytes))
	}
	if !f.yes {
		file, ok := stdin.(*os.File)
		if !ok || !term.IsTerminal(int(file.Fd())) {
			return client.Signature{}, errors.New("not a terminal: read the statement above and pass --yes to sign it")
		}
		fmt.Fprintf(stdout, "Sign this %s? [y/N] ", action)
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return client.Signature{}, errors.New("not signed")
		}
	}
	sig, format, err := f.sign(ctx, statement)
	if err != nil {
		return client.Signature{}, err
	}
	return client.Signature{Signer: name, Signature: base64.StdEncoding.EncodeToString(sig), Format: format, Reason: reason}, nil
}

func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin keygen", stderr)
	out := fs.String("out", "", "private key file to create (0600; never sent anywhere)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return errors.New("admin keygen: --out FILE is required")
	}
	priv, pub, err := approval.GenerateKey()
	if err != nil {
		return err
	}
	if err := approval.WritePrivateKey(*out, priv); err != nil {
		return fmt.Errorf("admin keygen: %w", err)
	}
	if err := os.WriteFile(*out+".pub", []byte(pub.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("admin keygen: %w", err)
	}
	fmt.Fprintln(stdout, pub.String())
	fmt.Fprintf(stderr, "private key: %s (keep it to yourself); public key: %s.pub (%s)\n"+
		"give the public key to the operator: vault init --admin NAME=%s.pub\n", *out, *out, pub.Fingerprint(), *out)
	return nil
}
