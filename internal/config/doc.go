// Package config owns how every role loads its one configuration struct:
// defaults in the struct, then a file (--configfile, YAML or TOML), then
// NLPSWARM_* environment variables, then flags, later sources winning. It also
// prints a role's --help. It knows no role's fields and opens no connection.
package config
