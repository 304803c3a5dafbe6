/*
 * Replays fuzz inputs through the libFuzzer target's entry point without libFuzzer, so any C
 * compiler (gcc in CI) runs the committed corpus under ASan/UBSan as a regression test:
 *   fuzz-replay DIR|FILE...
 * A failed invariant aborts (fuzz_target.c), a sanitizer report exits non-zero.
 */
#define _DEFAULT_SOURCE /* dirent, stat */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned long replayed;

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf;
  long n;
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    perror(path);
    if (f != NULL) fclose(f);
    return -1;
  }
  buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1u);
  if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
    perror(path);
    free(buf);
    fclose(f);
    return -1;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(buf, (size_t)n);
  free(buf);
  replayed++;
  return 0;
}

static int replay(const char *path) {
  struct stat st;
  DIR *dir;
  struct dirent *e;
  int rc = 0;
  if (stat(path, &st) != 0) {
    perror(path);
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) return replay_file(path);
  dir = opendir(path);
  if (dir == NULL) {
    perror(path);
    return -1;
  }
  while ((e = readdir(dir)) != NULL) {
    char child[4096];
    if (e->d_name[0] == '.') continue;
    if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= (int)sizeof child) {
      fprintf(stderr, "fuzz-replay: path too long: %s/%s\n", path, e->d_name);
      rc = -1;
      continue;
    }
    if (replay(child) != 0) rc = -1;
  }
  closedir(dir);
  return rc;
}

int main(int argc, char **argv) {
  int i, rc = 0;
  if (argc < 2) {
    fprintf(stderr, "usage: fuzz-replay DIR|FILE...\n");
    return 2;
  }
  for (i = 1; i < argc; i++)
    if (replay(argv[i]) != 0) rc = 1;
  if (replayed == 0) {
    fprintf(stderr, "fuzz-replay: no inputs found\n");
    return 1;
  }
  printf("fuzz-replay: %lu inputs, no failure\n", replayed);
  return rc;
}
