/* One process creates (open O_CREAT + close), stats and unlinks N files in
 * DIR, one call at a time, and prints per phase the CPU time it spent per
 * file (user + system, microseconds, all its threads) and the rate (files
 * per second). Run under a preload library by scripts/compare-shims.sh.
 *
 *   meta-loop DIR N
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
static double cpu(void){struct rusage r;getrusage(RUSAGE_SELF,&r);return r.ru_utime.tv_sec+r.ru_utime.tv_usec/1e6+r.ru_stime.tv_sec+r.ru_stime.tv_usec/1e6;}
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){const char*dir=argv[1];int n=atoi(argv[2]);char p[4096];
 mkdir(dir,0755);
 double c0=cpu(),w0=now();
 for(int i=0;i<n;i++){snprintf(p,sizeof p,"%s/f%d",dir,i);int fd=open(p,O_CREAT|O_WRONLY,0644);if(fd<0){perror("open");return 1;}close(fd);}
 double c1=cpu(),w1=now();
 struct stat st; for(int i=0;i<n;i++){snprintf(p,sizeof p,"%s/f%d",dir,i);if(stat(p,&st)){perror("stat");return 1;}}
 double c2=cpu(),w2=now();
 for(int i=0;i<n;i++){snprintf(p,sizeof p,"%s/f%d",dir,i);if(unlink(p)){perror("unlink");return 1;}}
 double c3=cpu(),w3=now();
 printf("create %.2f %.0f stat %.2f %.0f remove %.2f %.0f\n",(c1-c0)/n*1e6,n/(w1-w0),(c2-c1)/n*1e6,n/(w2-w1),(c3-c2)/n*1e6,n/(w3-w2));
 return 0;}
