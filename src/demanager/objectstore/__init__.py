"""Object storage over S3: the client, the bucket-to-folder sync and its plan.

OBS, MinIO, Ceph RGW and AWS all speak S3, so one client serves them all. Nothing
here knows about instances or backends: a backend hands a bucket path and a folder
to the sync, and gets back what was moved.
"""
