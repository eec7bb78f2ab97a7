"""Peewee migrations -- 001_initial.py.

Some examples (model - class or model name)::

    > Model = migrator.orm['table_name']            # Return model in current state by name
    > Model = migrator.ModelClass                   # Return model in current state by name

    > migrator.sql(sql)                             # Run custom SQL
    > migrator.run(func, *args, **kwargs)           # Run python function with the given args
    > migrator.create_model(Model)                  # Create a model (could be used as decorator)
    > migrator.remove_model(model, cascade=True)    # Remove a model
    > migrator.add_fields(model, **fields)          # Add fields (allow_not_null=True skips default)
    > migrator.change_fields(model, **fields)       # Change fields
    > migrator.remove_fields(model, *field_names, cascade=True)
    > migrator.rename_field(model, old_field_name, new_field_name)
    > migrator.rename_table(model, new_table_name)
    > migrator.add_index(model, *col_names, unique=False)
    > migrator.add_not_null(model, *field_names)
    > migrator.add_default(model, field_name, default)
    > migrator.add_constraint(model, name, sql)
    > migrator.drop_index(model, *col_names)
    > migrator.drop_not_null(model, *field_names)
    > migrator.drop_constraints(model, *constraints)

"""

from contextlib import suppress

import peewee as pw
from peewee_migrate import Migrator

with suppress(ImportError):
    pass


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Write your migrations here."""

    @migrator.create_model
    class Organization(pw.Model):
        id = pw.AutoField()
        public_id = pw.CharField(max_length=40, unique=True)
        name = pw.CharField(max_length=200)
        plan = pw.CharField(default="free", max_length=20)
        custom_rate_limit = pw.IntegerField(null=True)
        custom_concurrent_uploads = pw.IntegerField(null=True)
        webhook_secret = pw.CharField(max_length=100)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "organization"

    @migrator.create_model
    class User(pw.Model):
        id = pw.AutoField()
        public_id = pw.CharField(max_length=40, unique=True)
        email = pw.CharField(max_length=320, unique=True)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "user"

    @migrator.create_model
    class Membership(pw.Model):
        id = pw.AutoField()
        organization = pw.ForeignKeyField(
            column_name="organization_id", field="id", model=migrator.orm["organization"], on_delete="CASCADE"
        )
        user = pw.ForeignKeyField(
            column_name="user_id", field="id", model=migrator.orm["user"], on_delete="CASCADE"
        )
        role = pw.CharField(default="member", max_length=20)
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "membership"
            indexes = [(("organization", "user"), True)]

    @migrator.create_model
    class ApiKey(pw.Model):
        id = pw.AutoField()
        public_id = pw.CharField(max_length=40, unique=True)
        membership = pw.ForeignKeyField(
            column_name="membership_id", field="id", model=migrator.orm["membership"], on_delete="CASCADE"
        )
        key_hash = pw.CharField(max_length=64, unique=True)
        prefix = pw.CharField(max_length=20)
        created_at = pw.DateTimeField()
        revoked_at = pw.DateTimeField(null=True)
        last_used_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "api_key"

    @migrator.create_model
    class Upload(pw.Model):
        id = pw.AutoField()
        public_id = pw.CharField(max_length=40, unique=True)
        organization = pw.ForeignKeyField(
            column_name="organization_id", field="id", model=migrator.orm["organization"], on_delete="CASCADE"
        )
        filename = pw.CharField(max_length=255)
        content_type = pw.CharField(max_length=100)
        declared_size = pw.BigIntegerField()
        received_size = pw.BigIntegerField(null=True)
        storage_key = pw.CharField(max_length=200, unique=True)
        status = pw.CharField(default="pending", index=True, max_length=20)
        duration = pw.FloatField(null=True)
        created_at = pw.DateTimeField()
        expires_at = pw.DateTimeField()
        completed_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "upload"

    @migrator.create_model
    class Transcription(pw.Model):
        id = pw.AutoField()
        public_id = pw.CharField(max_length=40, unique=True)
        organization = pw.ForeignKeyField(
            column_name="organization_id", field="id", model=migrator.orm["organization"], on_delete="CASCADE"
        )
        upload = pw.ForeignKeyField(
            column_name="upload_id", field="id", model=migrator.orm["upload"], null=True, on_delete="SET NULL"
        )
        status = pw.CharField(default="queued", index=True, max_length=20)
        text = pw.TextField(null=True)
        duration = pw.FloatField(null=True)
        language = pw.CharField(max_length=20, null=True)
        progress = pw.FloatField(null=True)
        error_code = pw.CharField(max_length=40, null=True)
        error_message = pw.TextField(null=True)
        options = pw.TextField()
        webhook_url = pw.CharField(max_length=2000, null=True)
        created_at = pw.DateTimeField(index=True)
        started_at = pw.DateTimeField(null=True)
        completed_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "transcription"

    @migrator.create_model
    class Segment(pw.Model):
        id = pw.AutoField()
        transcription = pw.ForeignKeyField(
            column_name="transcription_id",
            field="id",
            model=migrator.orm["transcription"],
            on_delete="CASCADE",
        )
        index = pw.IntegerField()
        start = pw.FloatField()
        end = pw.FloatField()
        text = pw.TextField()
        words = pw.TextField(null=True)

        class Meta:
            table_name = "segment"
            indexes = [(("transcription", "index"), True)]

    @migrator.create_model
    class WebhookDelivery(pw.Model):
        id = pw.AutoField()
        transcription = pw.ForeignKeyField(
            column_name="transcription_id",
            field="id",
            model=migrator.orm["transcription"],
            on_delete="CASCADE",
        )
        attempt = pw.IntegerField()
        status_code = pw.IntegerField(null=True)
        error = pw.TextField(null=True)
        at = pw.DateTimeField()

        class Meta:
            table_name = "webhook_delivery"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Write your rollback migrations here."""

    migrator.remove_model("webhook_delivery")

    migrator.remove_model("segment")

    migrator.remove_model("transcription")

    migrator.remove_model("upload")

    migrator.remove_model("api_key")

    migrator.remove_model("membership")

    migrator.remove_model("user")

    migrator.remove_model("organization")
