"""gunicorn settings: ``gunicorn -c gunicorn.conf.py mysite.wsgi:application``.

The port comes from $PORT (ferry sets it per colour). Bind to loopback by default: with host
networking, nginx on the same host is the only client. BIND_ADDRESS=0.0.0.0 for a bridge network
(the Dockerfile sets it)."""

import os

bind = f"{os.environ.get('BIND_ADDRESS', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 30  # in-flight requests finish when the old colour is stopped
keepalive = 5
max_requests = 1000  # recycle workers now and then: a slow leak never takes the site down
max_requests_jitter = 100
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")  # nginx
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat files off the disk
