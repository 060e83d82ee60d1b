#ifndef KEEPMQ_VERSION_H
#define KEEPMQ_VERSION_H
const char *keepmq_version(void);
#endif
