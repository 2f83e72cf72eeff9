// Package secret owns reading secrets (passwords, tokens) from files such as
// Docker secrets under /run/secrets. Errors name the file, never its content.
package secret
