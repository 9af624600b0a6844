/* The least a client can do to ask a local server for its status every INTERVAL
 * seconds: the per-source anchor of scripts/bench-agent (BENCH_SOURCES=1).
 *   minimal-client apache PORT PATH INTERVAL     new connection, HTTP/1.1 GET, read to close
 *   minimal-client memcached PORT INTERVAL        kept connection, "stats" to END
 *   minimal-client mysql SOCKET USER PASSWORD QUERYFILE INTERVAL   kept session, one query
 * and the least an agent can do (the floor of BENCH_SOURCES=1): every INTERVAL, read the
 * host files the agent reads (kept open, pread from 0), statfs the given mounts, send
 * every given server its request, then read the answers (so the servers work at the
 * same time and the client sleeps as little as it can), and write BYTES to a kept TCP
 * connection to SINKPORT:
 *   minimal-client floor SINKPORT BYTES INTERVAL [mount PATH]... [apache PORT PATH]
 *                  [memcached PORT] [mysql SOCKET USER PASSWORD QUERYFILE] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <mysql.h>

static char buf[1 << 16];

static int dial(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); exit(1); }
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

static void wait_next(struct timespec *next, int interval) {
  next->tv_sec += interval;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL)) {}
}

/* One status page: a new connection, the request, the answer read to close. */
static int apache_ask(int port, const char *req, int len) {
  int s = dial(port);
  if (write(s, req, len) != len) { perror("write"); exit(1); }
  return s;
}

static void apache_read(int s) {
  while (read(s, buf, sizeof buf) > 0) {}
  close(s);
}

static void apache_once(int port, const char *req, int len) { apache_read(apache_ask(port, req, len)); }

static int apache_request(char *req, size_t size, const char *path) {
  return snprintf(req, size, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
}

static void memcached_ask(int s) {
  if (write(s, "stats\r\n", 7) != 7) { perror("write"); exit(1); }
}

static void memcached_read(int s) {
  size_t have = 0;
  while (have < 5 || memcmp(buf + have - 5, "END\r\n", 5)) {
    ssize_t n = read(s, buf + have, sizeof buf - have);
    if (n <= 0) { perror("read"); exit(1); }
    have += n;
  }
}

static void memcached_once(int s) {
  memcached_ask(s);
  memcached_read(s);
}

struct mysql { MYSQL *db; char *query; size_t len; };

static struct mysql mysql_open(const char *socket, const char *user, const char *password, const char *queryfile) {
  struct mysql m;
  FILE *f = fopen(queryfile, "r");
  m.len = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  while (m.len && (buf[m.len - 1] == '\n' || buf[m.len - 1] == '\r')) m.len--;
  buf[m.len] = 0;
  m.query = strdup(buf);
  m.db = mysql_init(NULL);
  if (!m.len || !mysql_real_connect(m.db, NULL, user, password, NULL, 0, socket, 0)) {
    fprintf(stderr, "mysql: %s\n", m.len ? mysql_error(m.db) : "empty query file");
    exit(1);
  }
  return m;
}

static void mysql_ask(struct mysql *m) {
  if (mysql_send_query(m->db, m->query, m->len)) { fprintf(stderr, "mysql: %s\n", mysql_error(m->db)); exit(1); }
}

static void mysql_read(struct mysql *m) {
  if (mysql_read_query_result(m->db)) { fprintf(stderr, "mysql: %s\n", mysql_error(m->db)); exit(1); }
  MYSQL_RES *r = mysql_store_result(m->db);
  while (r && mysql_fetch_row(r)) {}
  mysql_free_result(r);
}

static void mysql_once(struct mysql *m) {
  mysql_ask(m);
  mysql_read(m);
}

/* The files the agent reads on every collection (agent/src/collect/mod.rs). */
static const char *host_files[] = {"/proc/stat", "/proc/loadavg", "/proc/uptime", "/proc/meminfo",
                                   "/proc/diskstats", "/proc/net/dev"};
#define HOST_FILES (sizeof host_files / sizeof *host_files)

static int floor_agent(int argc, char **argv) {
  int sink = dial(atoi(argv[2])), interval = atoi(argv[4]), fds[HOST_FILES], nmounts = 0;
  size_t bytes = strtoul(argv[3], NULL, 10);
  const char *mounts[64];
  int apache_port = 0, apache_len = 0, memcached = -1, with_mysql = 0;
  char req[512], *batch = calloc(1, bytes ? bytes : 1);
  struct mysql m = {0};
  struct statfs st;
  struct timespec next;
  for (int i = 5; i < argc;) {
    if (!strcmp(argv[i], "mount") && i + 1 < argc && nmounts < 64) {
      mounts[nmounts++] = argv[i + 1]; i += 2;
    } else if (!strcmp(argv[i], "apache") && i + 2 < argc) {
      apache_port = atoi(argv[i + 1]); apache_len = apache_request(req, sizeof req, argv[i + 2]); i += 3;
    } else if (!strcmp(argv[i], "memcached") && i + 1 < argc) {
      memcached = dial(atoi(argv[i + 1])); i += 2;
    } else if (!strcmp(argv[i], "mysql") && i + 4 < argc) {
      m = mysql_open(argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4]); with_mysql = 1; i += 5;
    } else {
      fprintf(stderr, "floor: unknown or incomplete argument %s\n", argv[i]);
      return 2;
    }
  }
  for (size_t f = 0; f < HOST_FILES; f++)
    if ((fds[f] = open(host_files[f], O_RDONLY | O_CLOEXEC)) < 0) { perror(host_files[f]); return 1; }
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    for (size_t f = 0; f < HOST_FILES; f++)
      if (pread(fds[f], buf, sizeof buf, 0) < 0) { perror(host_files[f]); return 1; }
    for (int i = 0; i < nmounts; i++) statfs(mounts[i], &st);
    int apache = apache_port ? apache_ask(apache_port, req, apache_len) : -1;
    if (memcached >= 0) memcached_ask(memcached);
    if (with_mysql) mysql_ask(&m);
    if (apache >= 0) apache_read(apache);
    if (memcached >= 0) memcached_read(memcached);
    if (with_mysql) mysql_read(&m);
    if (write(sink, batch, bytes) != (ssize_t)bytes) { perror("write to sink"); return 1; }
    wait_next(&next, interval);
  }
}

int main(int argc, char **argv) {
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  if (argc >= 5 && !strcmp(argv[1], "floor")) return floor_agent(argc, argv);
  if (argc == 5 && !strcmp(argv[1], "apache")) {
    char req[512];
    int port = atoi(argv[2]), interval = atoi(argv[4]), len = apache_request(req, sizeof req, argv[3]);
    for (;;) {
      apache_once(port, req, len);
      wait_next(&next, interval);
    }
  }
  if (argc == 4 && !strcmp(argv[1], "memcached")) {
    int s = dial(atoi(argv[2])), interval = atoi(argv[3]);
    for (;;) {
      memcached_once(s);
      wait_next(&next, interval);
    }
  }
  if (argc == 7 && !strcmp(argv[1], "mysql")) {
    struct mysql m = mysql_open(argv[2], argv[3], argv[4], argv[5]);
    int interval = atoi(argv[6]);
    for (;;) {
      mysql_once(&m);
      wait_next(&next, interval);
    }
  }
  fprintf(stderr, "usage: minimal-client apache PORT PATH SECS | memcached PORT SECS | mysql SOCKET USER PASSWORD QUERYFILE SECS\n"
                  "       | floor SINKPORT BYTES SECS [mount PATH]... [apache PORT PATH] [memcached PORT] [mysql SOCKET USER PASSWORD QUERYFILE]\n");
  return 2;
}
