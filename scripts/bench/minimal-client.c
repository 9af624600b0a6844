/* The least a client can do to ask a local server for its status every INTERVAL
 * seconds: the per-source anchor of scripts/bench-agent (BENCH_SOURCES=1).
 *   minimal-client apache PORT PATH INTERVAL     new connection, HTTP/1.1 GET, read to close
 *   minimal-client memcached PORT INTERVAL        kept connection, "stats" to END
 *   minimal-client mysql SOCKET USER PASSWORD QUERYFILE INTERVAL   kept session, one query */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
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

int main(int argc, char **argv) {
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  if (argc == 5 && !strcmp(argv[1], "apache")) {
    char req[512];
    int port = atoi(argv[2]), interval = atoi(argv[4]);
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", argv[3]);
    for (;;) {
      int s = dial(port);
      ssize_t n;
      if (write(s, req, len) != len) { perror("write"); return 1; }
      while ((n = read(s, buf, sizeof buf)) > 0) {}
      close(s);
      wait_next(&next, interval);
    }
  }
  if (argc == 4 && !strcmp(argv[1], "memcached")) {
    int s = dial(atoi(argv[2])), interval = atoi(argv[3]);
    for (;;) {
      size_t have = 0;
      if (write(s, "stats\r\n", 7) != 7) { perror("write"); return 1; }
      while (have < 5 || memcmp(buf + have - 5, "END\r\n", 5)) {
        ssize_t n = read(s, buf + have, sizeof buf - have);
        if (n <= 0) { perror("read"); return 1; }
        have += n;
      }
      wait_next(&next, interval);
    }
  }
  if (argc == 7 && !strcmp(argv[1], "mysql")) {
    FILE *f = fopen(argv[5], "r");
    size_t qlen = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    while (qlen && (buf[qlen - 1] == '\n' || buf[qlen - 1] == '\r')) qlen--;
    buf[qlen] = 0;
    char *query = strdup(buf);
    int interval = atoi(argv[6]);
    MYSQL *db = mysql_init(NULL);
    if (!qlen || !mysql_real_connect(db, NULL, argv[3], argv[4], NULL, 0, argv[2], 0)) {
      fprintf(stderr, "mysql: %s\n", qlen ? mysql_error(db) : "empty query file");
      return 1;
    }
    for (;;) {
      if (mysql_real_query(db, query, qlen)) { fprintf(stderr, "mysql: %s\n", mysql_error(db)); return 1; }
      MYSQL_RES *r = mysql_store_result(db);
      while (r && mysql_fetch_row(r)) {}
      mysql_free_result(r);
      wait_next(&next, interval);
    }
  }
  fprintf(stderr, "usage: minimal-client apache PORT PATH SECS | memcached PORT SECS | mysql SOCKET USER PASSWORD QUERYFILE SECS\n");
  return 2;
}
